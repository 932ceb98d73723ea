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
}
