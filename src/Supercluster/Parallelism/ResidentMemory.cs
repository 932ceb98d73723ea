using Supercluster.Runtime;
using static TorchSharp.torch;

namespace Supercluster.Parallelism;

/// <summary>
/// Bytes of memory a set of tensors actually holds: the sizes of their distinct storages (allocations), so views of one
/// buffer count once and a view of a large buffer counts the whole buffer. This is what ZeRO's per-rank memory claims
/// are checked against (measured, not computed from the parameter count).
/// </summary>
public static class ResidentMemory
{
    public static long Bytes(IEnumerable<Tensor?> tensors)
    {
        var seen = new Dictionary<IntPtr, long>();
        foreach (var t in tensors)
        {
            if (t is null || t.IsInvalid) continue;
            var (address, bytes) = LibTorchLoader.Storage(t);
            if (address != IntPtr.Zero) seen[address] = Math.Max(bytes, seen.GetValueOrDefault(address));
        }
        return seen.Values.Sum();
    }

    /// <summary>
    /// This process's resident set (/proc/self/statm), bytes; 0 where /proc is missing. Differences of it measure what a
    /// CPU forward keeps for its backward when large allocations go straight to the OS (glibc: MALLOC_MMAP_THRESHOLD_).
    /// </summary>
    public static long ProcessBytes()
    {
        try
        {
            var fields = File.ReadAllText("/proc/self/statm").Split(' ');
            return long.Parse(fields[1]) * Environment.SystemPageSize;
        }
        catch (IOException) { return 0; }
        catch (UnauthorizedAccessException) { return 0; }
    }
}
