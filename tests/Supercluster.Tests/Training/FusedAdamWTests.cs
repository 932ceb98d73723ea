using Supercluster.Runtime;
using Supercluster.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Supercluster.Tests.Training;

public class FusedAdamWTests
{
    public FusedAdamWTests() => TorchSetup.Init();

    [NvrtcFact]
    public void The_kernel_compiles_to_PTX_for_Hopper()
    {
        Assert.True(Nvrtc.Available, Nvrtc.Describe());
        string ptx = Nvrtc.CompileToPtx(FusedAdamW.Source, "adamw_step.cu", "compute_90");
        Assert.Contains(".target sm_90", ptx);
        Assert.Contains($".entry {FusedAdamW.Entry}(", ptx);
        // Per element (one sqrt each; the compiler unrolls the loop): one byte of mask read, three fp32 stores (p, m, v).
        int Count(string op) => ptx.Split('\n').Count(l => l.TrimStart().StartsWith(op));
        int elements = Count("sqrt.rn.f32");
        Assert.True(elements >= 1);
        Assert.Equal(3 * elements, Count("st.global.f32"));
        Assert.Equal(elements, Count("ld.global.nc.u8"));
    }

    [NvrtcFact]
    public void A_compile_error_names_the_file_and_carries_the_compiler_log()
    {
        var e = Assert.Throws<InvalidOperationException>(() => Nvrtc.CompileToPtx("extern \"C\" __global__ void k() { undeclared_thing(); }", "broken.cu", "compute_90"));
        Assert.Contains("broken.cu", e.Message);
        Assert.Contains("undeclared_thing", e.Message);
    }

    [Fact]
    public void On_a_CPU_the_torch_ops_run_and_fused_is_refused_with_one_line()
    {
        using var mask = ones(10);
        using var opt = new AdamW(mask);
        Assert.False(opt.IsFused);
        Assert.Contains("torch ops (CPU tensors)", opt.Implementation);
        var e = Assert.Throws<BadInputException>(() => new AdamW(mask, implementation: "fused"));
        Assert.Contains("needs the parameters on a CUDA device", e.Message);
        Assert.Throws<BadInputException>(() => new AdamW(mask, implementation: "apex"));
    }

    [CudaFact]
    public void The_fused_kernel_matches_the_torch_ops_on_the_GPU()
    {
        var dev = new Device(DeviceType.CUDA, 0);
        const long n = 1_000_003;                                    // not a multiple of the block size
        var gen = new Generator(11);
        var p0 = randn(n, generator: gen);
        var mask = (rand(n, generator: gen) > 0.3).to(ScalarType.Float32);
        var grads = Enumerable.Range(0, 5).Select(_ => randn(n, generator: gen)).ToList();

        (Tensor P, Tensor M, Tensor V) Run(string impl)
        {
            // Parameters as a view at an offset into a larger buffer, as ZeRO's shards are.
            var big = zeros(n + 17, device: dev);
            var p = big.narrow(0, 17, n);
            p.copy_(p0.to(dev));
            using var opt = new AdamW(mask.to(dev), beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, implementation: impl);
            Assert.Equal(impl == "fused", opt.IsFused);
            var scale = tensor(new float[] { 0.5f }, device: dev);
            foreach (var g in grads) opt.Step(p, g.to(dev).clone(), lr: 1e-3, gradScale: scale);
            Assert.Equal(0f, big.narrow(0, 0, 17).abs().max().item<float>());   // nothing written before the view
            return (p.cpu(), opt.State.ExpAvg.cpu(), opt.State.ExpAvgSq.cpu());
        }

        var fused = Run("fused");
        var ops = Run("torch");
        Assert.True(fused.P.allclose(ops.P, rtol: 1e-5, atol: 1e-7), $"p differs by {(fused.P - ops.P).abs().max().item<float>()}");
        Assert.True(fused.M.allclose(ops.M, rtol: 1e-5, atol: 1e-8));
        Assert.True(fused.V.allclose(ops.V, rtol: 1e-5, atol: 1e-10));
        Assert.False(fused.P.allclose(p0, rtol: 0, atol: 1e-6));     // and it did move the parameters
    }

    [CudaFact]
    public void The_bundle_kernel_check_passes_on_the_GPU()
    {
        var r = KernelCheck.AdamW(new Device(DeviceType.CUDA, 0), checkedElements: 100_003, timedElements: 1_000_000, timedSteps: 2);
        Assert.True(r.Passed, $"relative errors: fused {r.FusedRelError}, torch {r.TorchRelError}");
        Assert.True(r.FusedRelError < 1e-6, $"fused relative error {r.FusedRelError}");   // fp32 rounding, not a wrong formula
    }

    [Fact]
    public void The_kernel_check_refuses_a_CPU_with_one_line()
    {
        var e = Assert.Throws<BadInputException>(() => KernelCheck.AdamW(CPU));
        Assert.Contains("--check-kernels needs --device cuda", e.Message);
    }
}
