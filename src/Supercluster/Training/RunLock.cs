using System.Text;
using System.Text.Json;
using Microsoft.Win32.SafeHandles;
using Supercluster.Checkpointing;

namespace Supercluster.Training;

/// <summary>
/// Exclusive ownership of a run directory for one training job, so two jobs never interleave checkpoints or metrics.
/// The lock is an <c>flock</c> on <c>RUN_DIR/train.lock</c> (the kernel drops it when the process dies, however it dies),
/// and the file names the holder (pid, host, process start time, command) so a refused process can say who holds it.
/// A file naming a process that is gone is a stale lock, taken over with a note; one naming a live process on this host
/// is honoured even if the file system ignored the flock. <c>launch</c> holds the lock for its whole job and tells its
/// ranks through <see cref="HolderVariable"/>, so rank 0 of a restart runs under the supervisor's lock.
/// </summary>
public sealed class RunLock : IDisposable
{
    public const string FileName = "train.lock";
    /// <summary>Set by <c>launch</c> for its ranks: the pid that holds the lock on their behalf.</summary>
    public const string HolderVariable = "SUPERCLUSTER_RUN_LOCK_HOLDER";

    readonly SafeFileHandle? _handle;   // null: held by our supervisor

    RunLock(string path, SafeFileHandle? handle) { Path = path; _handle = handle; }

    public string Path { get; }

    /// <summary>The holder a lock file names.</summary>
    public sealed record Holder(int Pid, string Host, long StartTicks, string Started, string Command)
    {
        public override string ToString() => $"pid {Pid} on {Host} (started {Started}: {Command})";

        /// <summary>True when the process is alive on this host and is the same process (not a reused pid).</summary>
        [System.Text.Json.Serialization.JsonIgnore] public bool IsAliveHere => Host == Environment.MachineName && StartTicksOf(Pid) is { } t && t == StartTicks;
    }

    /// <summary>Takes the lock of <paramref name="runDir"/> or throws a <see cref="BadInputException"/> naming the holder.</summary>
    public static RunLock Acquire(string runDir, Action<string>? note = null)
    {
        Directory.CreateDirectory(runDir);
        string path = System.IO.Path.Combine(runDir, FileName);
        int fd = Libc.open(path, Libc.O_RDWR | Libc.O_CREAT | Libc.O_CLOEXEC, Convert.ToInt32("644", 8));
        if (fd < 0) throw Libc.Error("cannot open lock file", path);
        var handle = new SafeFileHandle(fd, ownsHandle: true);
        try
        {
            var previous = Read(handle);
            bool ours = previous is not null && Environment.GetEnvironmentVariable(HolderVariable) == previous.Pid.ToString() && previous.IsAliveHere;
            if (Libc.flock(fd, Libc.LOCK_EX | Libc.LOCK_NB) != 0)
            {
                if (Libc.Errno != Libc.EWOULDBLOCK) throw Libc.Error("cannot lock", path);
                previous = Read(handle); // the holder may have written it just now
                if (ours) { handle.Dispose(); return new RunLock(path, null); }
                throw Refuse(runDir, path, previous);
            }
            if (previous is not null)
            {
                if (ours) { handle.Dispose(); return new RunLock(path, null); }
                // The flock was free: the holder is gone, unless the file system does not implement flock.
                if (previous.IsAliveHere && previous.Pid != Environment.ProcessId) throw Refuse(runDir, path, previous);
                note?.Invoke($"note: {path}: stale lock of {previous}, which is no longer running; taking it over");
            }
            Write(handle, new Holder(Environment.ProcessId, Environment.MachineName, StartTicksOf(Environment.ProcessId) ?? 0,
                DateTime.UtcNow.ToString("yyyy-MM-dd HH:mm:ss 'UTC'"), string.Join(' ', Environment.GetCommandLineArgs().Skip(1).Take(12))));
            return new RunLock(path, handle);
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    static BadInputException Refuse(string runDir, string path, Holder? holder) =>
        new($"--out {runDir}: in use by another training job, {holder?.ToString() ?? "holder unknown"} (lock {path}); " +
            "wait for it to finish, stop it, or choose another --out");

    /// <summary>The holder a lock file names, or null (empty: released; unreadable: a crash mid-write).</summary>
    public static Holder? ReadFile(string path)
    {
        int fd = Libc.open(path, Libc.O_RDONLY | Libc.O_CLOEXEC, 0);
        if (fd < 0) return null;
        using var handle = new SafeFileHandle(fd, ownsHandle: true);
        return Read(handle);
    }

    static Holder? Read(SafeFileHandle handle)
    {
        var buf = new byte[4096];
        int n = RandomAccess.Read(handle, buf, 0);
        if (n == 0) return null;
        try { return JsonSerializer.Deserialize<Holder>(buf.AsSpan(0, n)); }
        catch (JsonException) { return null; }
    }

    static void Write(SafeFileHandle handle, Holder h)
    {
        var bytes = Encoding.UTF8.GetBytes(JsonSerializer.Serialize(h) + "\n");
        RandomAccess.SetLength(handle, 0);
        RandomAccess.Write(handle, bytes, 0);
        RandomAccess.FlushToDisk(handle);
    }

    /// <summary>Start time of a process in clock ticks since boot (/proc/PID/stat field 22): tells a reused pid apart.</summary>
    public static long? StartTicksOf(int pid)
    {
        try
        {
            string stat = File.ReadAllText($"/proc/{pid}/stat");
            var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' '); // fields from 3 (state) on; comm may hold spaces
            return long.Parse(fields[22 - 3]);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException or IndexOutOfRangeException) { return null; }
    }

    /// <summary>Releases the lock: the file is emptied (not deleted: deleting races with a process that just opened it).</summary>
    public void Dispose()
    {
        if (_handle is null || _handle.IsClosed) return;
        RandomAccess.SetLength(_handle, 0);
        Libc.flock((int)_handle.DangerousGetHandle(), Libc.LOCK_UN);
        _handle.Dispose();
    }
}
