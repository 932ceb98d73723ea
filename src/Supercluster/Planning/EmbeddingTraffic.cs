namespace Supercluster.Planning;

/// <summary>
/// Memory traffic of the input embedding on the first stage, as Megatron-LM runs its vocab-parallel embedding
/// (<c>VocabParallelEmbedding</c>: <c>F.embedding</c> on this rank's V/t rows; PyTorch's <c>embedding_dense_backward</c>):
/// forward reads each token's row and writes the output (2 + 2 B per element of T × h); backward reads the output gradient
/// and adds it into the token's gradient row (2 + 2 + 2 B per element), into a dense V/t × h gradient that is zero-filled
/// first (2 B per parameter), which is then added to the step's gradient like any weight's — but never inside a GEMM, so
/// with wgrad-fused accumulation (<see cref="GradAccumulation.FusedIntoGemm"/>) it takes the separate fp32 pass
/// (Megatron-Core's DDP hook: <c>param.main_grad.add_(param.grad)</c>, 10 B). The TP collective on the output (all-reduce,
/// or reduce-scatter with sequence parallelism) and learned position embeddings (s × h) are left out: one h-wide collective
/// per micro-batch against four per layer, and s ≪ V.
/// </summary>
public static class EmbeddingTraffic
{
    public const double ForwardBytesPerElement = 2 + 2, BackwardBytesPerElement = 2 + 2 + 2, ZeroFillBytesPerParam = 2;

    /// <summary>Bytes per embedding parameter per micro-batch: the zero-filled dense gradient and its accumulation.</summary>
    public static double GradientBytesPerParam(GradAccumulation a) => ZeroFillBytesPerParam
        + (a == GradAccumulation.FusedIntoGemm ? ComputeModel.GradAccumulationBytesPerParam : ComputeModel.AccumulationBytesPerParam(a));
}
