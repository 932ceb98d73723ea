using TorchSharp;
using static TorchSharp.torch;

namespace Supercluster.Distributed;

/// <summary>
/// Lets a backend accept tensors on any device: a collective runs on a contiguous tensor on the backend's own device
/// (host memory for MPI, the rank's GPU for NCCL), so a tensor elsewhere, or not contiguous, is copied there first and
/// the result copied back. A native library never sees a pointer into memory it cannot address.
/// </summary>
public static class Staging
{
    /// <summary>
    /// Runs <paramref name="op"/> on <paramref name="t"/> itself when it is contiguous on <paramref name="device"/>, else on a
    /// staged copy (<paramref name="copyIn"/>: with <paramref name="t"/>'s values; false for outputs) whose result is
    /// copied back into <paramref name="t"/>.
    /// </summary>
    public static void Run(Tensor t, Device device, Action<Tensor> op, bool copyIn = true)
    {
        if (On(t, device) && t.is_contiguous()) { op(t); return; }
        using var staged = copyIn ? t.to(device).contiguous() : empty(t.shape, t.dtype, device: device);
        op(staged);
        t.copy_(staged);
    }

    /// <summary>Whether <paramref name="t"/> lives on <paramref name="device"/> (a CUDA device without an index means device 0).</summary>
    public static bool On(Tensor t, Device device) =>
        t.device_type == device.type && (device.type != DeviceType.CUDA || t.device_index == Math.Max(0, device.index));
}
