using Supercluster.Planning;

namespace Supercluster.Tests.Planning;

/// <summary>The input embedding's memory traffic on the first stage (<see cref="EmbeddingTraffic"/>), against values computed by hand.</summary>
public class EmbeddingTrafficTests
{
    static readonly GpuSpec H100 = GpuCatalog.Get("H100-SXM");
    static readonly ModelSpec Llama8B = ModelCatalog.Get("llama3-8b"); // V 128,256, h 4096

    [Fact]
    public void TheEmbeddingGradientIsADenseZeroFilledTensorAddedLikeAnyWeight()
    {
        // Megatron-Core, wgrad accumulation fused into the GEMMs: the embedding's gradient still takes the fp32 pass, 2 + 10 B.
        Assert.Equal(12, EmbeddingTraffic.GradientBytesPerParam(GradAccumulation.FusedIntoGemm));
        Assert.Equal(8, EmbeddingTraffic.GradientBytesPerParam(GradAccumulation.Fp16InPlace)); // 2 + 2 + 2 + 2
        // Llama 3.1 8B, TP 1, CP 2 at seq 8192 (T = 4096), H100 streaming at 3350e9 × 0.9 = 3.015e12 B/s:
        // forward 4096·4096·4 B = 67.1 MB → 0.0222583 ms; backward 4096·4096·6 B + 128,256·4096·12 B = 6.4047 GB → 2.1242793 ms.
        var run = new TrainingRun(8192, 1e9, 1, GradAccumulation: GradAccumulation.FusedIntoGemm);
        var l = new ParallelLayout(Tp: 1, Cp: 2, Recompute: Recompute.None);
        var e = ComputeModel.InputEmbedding(Llama8B, run, l, H100);
        Assert.Equal(0.0222583e-3, e.Forward, 9);
        Assert.Equal(2.1242793e-3, e.Backward, 9);
        Assert.Equal(e.Total, e.MemoryBound, 12);
        // fp16 accumulated in place: 4096·4096·6 + 128,256·4096·8 B → 1.4273154 ms.
        Assert.Equal(1.4273154e-3, ComputeModel.InputEmbedding(Llama8B, run with { GradAccumulation = GradAccumulation.Fp16InPlace }, l, H100).Backward, 9);
    }

    [Fact]
    public void OneStageCarriesItAndAPipelinePacesOnItsSlowestEnd()
    {
        // Accumulation fused into the GEMMs, so a stage's layers are exactly ComputeModel.Layer (no separate pass).
        var run = new TrainingRun(8192, 1e9, 1, GradAccumulation: GradAccumulation.FusedIntoGemm);
        var one = new ParallelLayout(Tp: 1, Cp: 2, Recompute: Recompute.None);
        double layer = ComputeModel.Layer(Llama8B, run, one, H100).Total;
        // One stage: 32 layers + the output layer and loss + the input embedding.
        Assert.Equal(32 * layer + ComputeModel.OutputLayer(Llama8B, run, one, H100).Total + ComputeModel.InputEmbedding(Llama8B, run, one, H100).Total,
            ComputeModel.Stage(Llama8B, run, one, H100).Total, 9);
        // Two stages: the last (16 layers + the output layer's 2·h·V GEMMs and loss, ≈ 28 ms) outweighs the first (16 layers
        // + 2.1 ms of embedding), so the embedding is not on the pacing stage.
        var two = one with { Pp = 2 };
        Assert.Equal(16 * layer + ComputeModel.OutputLayer(Llama8B, run, two, H100).Total, ComputeModel.Stage(Llama8B, run, two, H100).Total, 9);
    }
}
