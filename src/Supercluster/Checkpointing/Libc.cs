using System.Runtime.InteropServices;

namespace Supercluster.Checkpointing;

/// <summary>
/// The few POSIX calls .NET does not expose: fsync of a directory, flock, kill with any signal. Linux values.
/// </summary>
internal static class Libc
{
    public const int ENOSPC = 28, EDQUOT = 122, EWOULDBLOCK = 11, EINVAL = 22;
    public const int O_RDONLY = 0, O_RDWR = 2, O_CREAT = 0x40, O_DIRECTORY = 0x10000, O_CLOEXEC = 0x80000;
    public const int LOCK_EX = 2, LOCK_NB = 4, LOCK_UN = 8;
    public const int SIGINT = 2, SIGKILL = 9, SIGTERM = 15;

    [DllImport("libc", SetLastError = true)] public static extern int open(string path, int flags, int mode);
    [DllImport("libc", SetLastError = true)] public static extern int close(int fd);
    [DllImport("libc", SetLastError = true)] public static extern int fsync(int fd);
    [DllImport("libc", SetLastError = true)] public static extern int flock(int fd, int operation);
    [DllImport("libc", SetLastError = true)] public static extern int kill(int pid, int signal);

    public static int Errno => Marshal.GetLastPInvokeError();

    public static IOException Error(string what, string path) =>
        new($"{what} {path}: {Marshal.GetPInvokeErrorMessage(Errno)}", Errno);
}
