using Supercluster.Planning;

namespace Supercluster.Tests.Planning;

/// <summary>The SMs Transformer Engine's pipelined userbuffers reduce-scatter keeps from the row-parallel forward GEMMs
/// (<see cref="CommGemmSmMargin"/>), against values computed by hand.</summary>
public class CommGemmSmMarginTests
{
    static readonly GpuSpec H100 = GpuCatalog.Get("H100-SXM");
    // GPT-3 175B as the DGXC YAML runs it: h 12288, TP 4 with sequence parallelism, micro-batch 1 × 2048 tokens.
    static readonly ModelSpec Gpt3 = new("gpt3", 96, 12288, 96, 96, 49152, 50688);
    static readonly ParallelLayout Tp4 = new(Tp: 4, Recompute: Recompute.None);
    static readonly TrainingRun Plain = new(2048, 1e12, 1), Ub = Plain with { TpOverlapSmMargin = new CommGemmSmMargin(24, 20) };

    [Fact]
    public void AGpuWithoutSmsKeepsItsPerSmRateAndItsBandwidth()
    {
        var g = CommGemmSmMargin.WithoutSms(H100, 24);
        Assert.Equal(108, g.SmCount);
        Assert.Equal(989.0 * 108 / 132, g.Bf16Tflops, 9);
        Assert.Equal(1979.0 * 108 / 132, g.Fp8Tflops, 9);
        Assert.Equal(H100.StreamBytesPerSecond, g.StreamBytesPerSecond);
        Assert.Same(H100, CommGemmSmMargin.WithoutSms(H100, 0));
    }

    [Fact]
    public void TheRowParallelForwardGemmsRunOnTheSmsLeft()
    {
        // proj_fprop 2048×12288×3072 (K = h/4), 2·2048·12288·3072 = 1.5462e11 FLOPs at 989e12 × 0.801 × 0.968 per GPU:
        //   132 SMs: 64×64 tiles, 6144 in 47 waves = 0.99033 → 0.20360 ms; 108 SMs (24 kept by the reduce-scatter):
        //   57 waves = 0.99805 at 108/132 of the rate → 0.24692 ms: +0.043319 ms.
        // fc2_fprop 2048×12288×12288 (K = 4h/4): 0.81440 ms on 132 SMs; 112 SMs (20 kept): 0.99740 at 112/132 → 0.95302 ms:
        //   +0.138622 ms. K ramp capped at 1 for both; both compute-bound.
        var plain = ComputeModel.Layer(Gpt3, Plain, Tp4, H100);
        var ub = ComputeModel.Layer(Gpt3, Ub, Tp4, H100);
        Assert.Equal(0.043319e-3 + 0.138622e-3, ub.Forward - plain.Forward, 8);
        Assert.Equal(ub.Forward - plain.Forward, ub.Gemm - plain.Gemm, 12);
        Assert.Equal(plain.Backward, ub.Backward, 12);
        // Without tensor parallelism there is no userbuffers overlap and nothing changes.
        var tp1 = new ParallelLayout(Tp: 1, Recompute: Recompute.None);
        Assert.Equal(ComputeModel.Layer(Gpt3, Plain, tp1, H100).Forward, ComputeModel.Layer(Gpt3, Ub, tp1, H100).Forward, 12);
    }
}
