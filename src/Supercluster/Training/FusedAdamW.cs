using Supercluster.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace Supercluster.Training;

/// <summary>
/// The whole AdamW update as one CUDA kernel over the flat buffers, compiled once per device with NVRTC: per element
/// p, g, m, v are read once and p, m, v written once (29 bytes with the 1-byte decay mask), against ~90 bytes for the
/// sequence of torch ops. The clipping factor is read from device memory, so clipping needs no host round trip.
/// Checked against <see cref="AdamW"/>'s torch path on the device (tests/…/FusedAdamWTests).
/// </summary>
public sealed unsafe class FusedAdamW
{
    /// <summary>The kernel (CUDA C). Arithmetic in the order torch's ops use: decay, lerp for m, β₂v + (1−β₂)g², addcdiv.</summary>
    public const string Source = """
        extern "C" __global__ void adamw_step(
            float* __restrict__ p, const float* __restrict__ g, float* __restrict__ m, float* __restrict__ v,
            const unsigned char* __restrict__ decay, const float* __restrict__ grad_scale, long long n,
            float neg_lr_wd, float one_minus_beta1, float beta2, float one_minus_beta2, float bc2_sqrt, float eps, float neg_step)
        {
            const float scale = grad_scale != 0 ? *grad_scale : 1.0f;
            for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
                const float gi = g[i] * scale;
                float pi = p[i];
                if (decay[i]) pi = pi + neg_lr_wd * pi;                 // decoupled weight decay
                float mi = m[i];
                mi = mi + one_minus_beta1 * (gi - mi);                  // m = lerp(m, g, 1 - beta1)
                const float vi = beta2 * v[i] + one_minus_beta2 * gi * gi;
                const float denom = sqrtf(vi) / bc2_sqrt + eps;
                p[i] = pi + neg_step * (mi / denom);
                m[i] = mi;
                v[i] = vi;
            }
        }
        """;

    public const string Entry = "adamw_step";
    const int Threads = 256;
    const long MaxBlocks = 1 << 20;   // grid-stride beyond this

    static readonly Dictionary<int, (FusedAdamW? Kernel, string Why)> PerDevice = new();
    readonly CudaKernel _kernel;

    FusedAdamW(CudaKernel kernel) => _kernel = kernel;

    /// <summary>The kernel for CUDA device <paramref name="device"/>, compiled on first use; null (and why) where it cannot be.</summary>
    public static FusedAdamW? For(int device, out string whyNot)
    {
        lock (PerDevice)
        {
            if (!PerDevice.TryGetValue(device, out var entry))
            {
                try { entry = (new FusedAdamW(CudaKernel.Compile(Source, Entry, device)), ""); }
                catch (InvalidOperationException e) { entry = (null, e.Message.Split('\n')[0]); }
                PerDevice[device] = entry;
            }
            whyNot = entry.Why;
            return entry.Kernel;
        }
    }

    /// <summary>One AdamW step in place on contiguous fp32 CUDA buffers of equal length (decay: uint8).</summary>
    public void Step(Tensor p, Tensor g, Tensor m, Tensor v, Tensor decay, Tensor? gradScale,
        double lr, double weightDecay, double beta1, double beta2, double eps, double biasCorrection1, double biasCorrection2)
    {
        long n = p.numel();
        if (g.numel() != n || m.numel() != n || v.numel() != n || decay.numel() != n)
            throw new ArgumentException("fused AdamW: buffers of different lengths");
        foreach (var t in new[] { p, g, m, v, decay })
            if (!t.is_contiguous() || t.device.type != DeviceType.CUDA) throw new ArgumentException("fused AdamW: buffers must be contiguous CUDA tensors");
        if (p.dtype != ScalarType.Float32 || g.dtype != ScalarType.Float32 || decay.dtype != ScalarType.Byte)
            throw new ArgumentException("fused AdamW: expected fp32 p, g, m, v and a uint8 decay mask");
        if (gradScale is not null && (gradScale.dtype != ScalarType.Float32 || gradScale.device.type != DeviceType.CUDA || gradScale.numel() != 1))
            throw new ArgumentException("fused AdamW: the gradient scale must be one fp32 value on the device");
        if (n == 0) return;

        IntPtr pp = LibTorchLoader.DataPtr(p), gp = LibTorchLoader.DataPtr(g), mp = LibTorchLoader.DataPtr(m), vp = LibTorchLoader.DataPtr(v),
            dp = LibTorchLoader.DataPtr(decay), sp = gradScale is null ? IntPtr.Zero : LibTorchLoader.DataPtr(gradScale);
        // Constants rounded to fp32 from double, as torch rounds its Scalar arguments.
        float negLrWd = (float)(-lr * weightDecay), b1w = (float)(1 - beta1), b2 = (float)beta2, omb2 = (float)(1 - beta2),
            bc2Sqrt = (float)Math.Sqrt(biasCorrection2), e = (float)eps, negStep = (float)(-lr / biasCorrection1);
        void** args = stackalloc void*[] { &pp, &gp, &mp, &vp, &dp, &sp, &n, &negLrWd, &b1w, &b2, &omb2, &bc2Sqrt, &e, &negStep };
        _kernel.Launch(Math.Min((n + Threads - 1) / Threads, MaxBlocks), Threads, args);
    }
}
