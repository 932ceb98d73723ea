using Supercluster.Planning;

namespace Supercluster.Tests.Planning;

/// <summary>How Transformer Engine's userbuffers TP overlap runs a layer's GEMMs (<see cref="UserbufferOverlap"/>: chunks and
/// the SMs its pipelined reduce-scatter keeps), against values computed by hand.</summary>
public class UserbufferOverlapTests
{
    static readonly GpuSpec H100 = GpuCatalog.Get("H100-SXM");
    // GPT-3 175B as the DGXC YAML runs it: h 12288, TP 4 with sequence parallelism, micro-batch 1 × 2048 tokens.
    static readonly ModelSpec Gpt3 = new("gpt3", 96, 12288, 96, 96, 49152, 50688);
    static readonly ParallelLayout Tp4 = new(Tp: 4, Recompute: Recompute.None);
    static readonly TrainingRun Plain = new(2048, 1e12, 1), Ub = Plain with { Userbuffers = new UserbufferOverlap(24, 20) };

    [Fact]
    public void AGpuWithoutSmsKeepsItsPerSmRateAndItsBandwidth()
    {
        var g = UserbufferOverlap.WithoutSms(H100, 24);
        Assert.Equal(108, g.SmCount);
        Assert.Equal(989.0 * 108 / 132, g.Bf16Tflops, 9);
        Assert.Equal(1979.0 * 108 / 132, g.Fp8Tflops, 9);
        Assert.Equal(H100.StreamBytesPerSecond, g.StreamBytesPerSecond);
        Assert.Same(H100, UserbufferOverlap.WithoutSms(H100, 0));
        Assert.Equal(4, new UserbufferOverlap(0, 0).RingChunks(4));
        Assert.Equal(4, new UserbufferOverlap(0, 0, Aggregate: true).RingChunks(8));
    }

    [Fact]
    public void ChunksAndTheSmMarginCostWhatTheirWavesSay()
    {
        // Rate 989e12 × 0.801 × 0.968 per GPU (× SMs kept / 132), best CTA tile's waves; every K ramp capped at 1, all compute-bound.
        // Forward:
        //   QKV 2048×9216×12288 in 4 ring chunks of 512 rows: wave 0.96970 (64×64, 1152 tiles in 9 waves) against 0.99740 whole:
        //     0.623797 − 0.606470 ms = +0.017328 ms; MLP up 2048×12288×12288: 0.96970 against 0.99033: +0.017328 ms;
        //   proj 2048×12288×3072 in 4 pipeline chunks on 108 SMs: 0.94815 at 108/132 of the rate: 0.259916 − 0.203601 = +0.056315 ms;
        //   MLP down 2048×12288×12288 in 4 chunks on 112 SMs: 0.97959 at 112/132: 0.970351 − 0.814402 = +0.155949 ms.
        // Backward: proj dgrad 2048×3072×12288 in 4 ring chunks: 0.96970 either way, +0; MLP-down dgrad as MLP up: +0.017328 ms.
        // The column-parallel dgrad/wgrad (bulk) and every wgrad stay whole.
        var plain = ComputeModel.Layer(Gpt3, Plain, Tp4, H100);
        var ub = ComputeModel.Layer(Gpt3, Ub, Tp4, H100);
        Assert.Equal(0.017328e-3 + 0.017328e-3 + 0.056315e-3 + 0.155949e-3, ub.Forward - plain.Forward, 8);
        Assert.Equal(0.017328e-3, ub.Backward - plain.Backward, 8);
        Assert.Equal(ub.Total - plain.Total, ub.Gemm - plain.Gemm, 12);
        // Without tensor parallelism there is no userbuffers overlap and nothing changes.
        var tp1 = new ParallelLayout(Tp: 1, Recompute: Recompute.None);
        Assert.Equal(ComputeModel.Layer(Gpt3, Plain, tp1, H100).Total, ComputeModel.Layer(Gpt3, Ub, tp1, H100).Total, 12);
    }
}
