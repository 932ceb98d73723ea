using System.Text;

namespace Supercluster.Checkpointing;

/// <summary>
/// Writes that a crash or power loss at any instant leaves either old or new, never torn: a temporary name in the
/// same directory, fsync, rename over the target, then fsync of the directory so the rename itself is durable
/// (ext4/xfs can otherwise lose a rename that was not followed by a directory fsync).
/// </summary>
public static class DurableFile
{
    public static void WriteAllText(string path, string text) => WriteAllBytes(path, Encoding.UTF8.GetBytes(text));

    public static void WriteAllBytes(string path, ReadOnlySpan<byte> bytes)
    {
        string full = Path.GetFullPath(path);
        string dir = Path.GetDirectoryName(full)!;
        string tmp = Path.Combine(dir, $".{Path.GetFileName(full)}.tmp-{Environment.ProcessId}");
        try
        {
            using (var f = new FileStream(tmp, FileMode.Create, FileAccess.Write, FileShare.None))
            {
                f.Write(bytes);
                f.Flush(flushToDisk: true);
            }
            File.Move(tmp, full, overwrite: true);
        }
        catch
        {
            try { File.Delete(tmp); } catch (IOException) { }
            throw;
        }
        FsyncDirectory(dir);
    }

    /// <summary>Makes renames and creations inside <paramref name="dir"/> durable.</summary>
    public static void FsyncDirectory(string dir)
    {
        if (!OperatingSystem.IsLinux()) return;
        int fd = Libc.open(dir, Libc.O_RDONLY | Libc.O_DIRECTORY | Libc.O_CLOEXEC, 0);
        if (fd < 0) throw Libc.Error("cannot open directory", dir);
        try
        {
            // EINVAL: a file system that cannot sync directories (some FUSE/network ones); nothing more to do there.
            if (Libc.fsync(fd) != 0 && Libc.Errno != Libc.EINVAL) throw Libc.Error("cannot fsync directory", dir);
        }
        finally { Libc.close(fd); }
    }

    /// <summary>True for "no space left on device" and "disk quota exceeded" (.NET puts errno in HResult on Unix).</summary>
    public static bool IsDiskFull(Exception e) => e is DiskFullException or IOException { HResult: Libc.ENOSPC or Libc.EDQUOT };
}

/// <summary>A write failed because the disk (or quota) is full; the partial files are already removed.</summary>
public sealed class DiskFullException(string message, Exception inner) : IOException(message, inner);
