using System.Runtime.InteropServices;

namespace Supercluster.Server;

/// <summary>
/// Bounds the native heap of a long-running server (glibc only; a no-op elsewhere). libtorch allocates its activations
/// with malloc from whichever thread runs a forward (the scheduler, thread-pool threads for embeddings); glibc gives
/// each thread an arena of its own and keeps freed memory in it, so resident memory climbs with the number of threads
/// that ever ran a forward and stays at its peak. Two arenas, and returning free pages to the kernel every few
/// seconds, keep it near the working set (numbers in docs/serving.md, "Memory").
/// </summary>
public static class NativeMemory
{
    const int M_ARENA_MAX = -8;

    [DllImport("libc", EntryPoint = "mallopt")] static extern int MallOpt(int param, int value);
    [DllImport("libc", EntryPoint = "malloc_trim")] static extern int MallocTrim(nuint pad);

    static bool Glibc => OperatingSystem.IsLinux() && RuntimeInformation.RuntimeIdentifier.StartsWith("linux-") && !RuntimeInformation.RuntimeIdentifier.Contains("musl");

    /// <summary>Caps malloc arenas (as MALLOC_ARENA_MAX=N would, for arenas created from now on).</summary>
    public static void LimitArenas(int arenas)
    {
        if (!Glibc) return;
        try { MallOpt(M_ARENA_MAX, arenas); } catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { }
    }

    /// <summary>Returns free heap pages to the kernel; cheap when there is little to return.</summary>
    public static void Trim()
    {
        if (!Glibc) return;
        try { MallocTrim(0); } catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { }
    }
}
