namespace Supercluster.Planning;

/// <summary>Bytes per GPU on the busiest pipeline stage (the first: it holds the embedding and the most in-flight micro-batches).</summary>
public sealed record MemoryBreakdown(double WeightsBytes, double GradientsBytes, double OptimizerBytes, double ActivationsBytes,
    double ReservedBytes, double CapacityBytes)
{
    public double TotalBytes => WeightsBytes + GradientsBytes + OptimizerBytes + ActivationsBytes + ReservedBytes;
    public bool Fits => TotalBytes <= CapacityBytes;
}

/// <summary>
/// Memory per GPU.
/// Model states (Rajbhandari et al. 2020, ZeRO §3): mixed-precision Adam keeps 2 bytes of bf16 weights, 2 bytes of gradients and
/// K=12 bytes of optimizer state (fp32 master weights, momentum, variance) per parameter. ZeRO-1 shards the optimizer,
/// ZeRO-2 also the gradients, ZeRO-3 also the weights, over the data-parallel (× context-parallel) group;
/// expert weights are sharded over the expert-data-parallel group (DP·CP/EP).
/// Activations (Korthikanti et al. 2022, eq. 2 and Table 2, with sequence parallelism so every term is divided by TP):
/// per layer per micro-batch s·b·(attention 7h+4·kv + norms 4h + k·MLP(3h+4·ffn, or 3h+8·ffn gated)) + 5·a·s²·b bytes;
/// selective recomputation drops the 5·a·s²·b score term; full recomputation keeps only the 2·s·b·h layer input.
/// 1F1B keeps min(m, p) micro-batches of L/p layers in flight on the first stage, × (1 + (p−1)/(p·v)) when interleaved.
/// </summary>
public static class MemoryModel
{
    public const double WeightBytesPerParam = 2, GradBytesPerParam = 2, OptimizerBytesPerParam = 12;
    /// <summary>Held back for the CUDA context, NCCL buffers and allocator fragmentation.</summary>
    public const double ReservedFraction = 0.10;

    /// <summary>Parameters on one GPU of the first stage: (dense, expert).</summary>
    public static (double Dense, double Expert) ParamsPerGpu(ModelSpec m, ParallelLayout l)
    {
        double layersPerStage = (double)m.Layers / l.Pp;
        double embedding = l.Pp == 1 ? m.EmbeddingParams : (double)m.Vocab * m.Hidden;
        double dense = (layersPerStage * m.DenseParamsPerLayer + embedding) / l.Tp;
        double expert = layersPerStage * m.ExpertParamsPerLayer / ((double)l.Tp * l.Ep);
        return (dense, expert);
    }

    public static MemoryBreakdown Estimate(ModelSpec m, TrainingRun run, ParallelLayout l, GpuSpec gpu)
    {
        var (dense, expert) = ParamsPerGpu(m, l);
        double dpGroup = (double)l.Dp * l.Cp, expertDpGroup = dpGroup / l.Ep;
        double Shard(double bytesPerParam, bool sharded) =>
            sharded ? bytesPerParam * (dense / dpGroup + expert / expertDpGroup) : bytesPerParam * (dense + expert);

        double weights = Shard(WeightBytesPerParam, l.Zero >= 3);
        double grads = Shard(GradBytesPerParam, l.Zero >= 2);
        double optimizer = Shard(OptimizerBytesPerParam, l.Zero >= 1);
        double capacity = gpu.MemoryGB * 1e9;
        return new(weights, grads, optimizer, ActivationBytes(m, run, l), ReservedFraction * capacity, capacity);
    }

    /// <summary>Activation bytes of one layer for one micro-batch on one GPU.</summary>
    public static double ActivationBytesPerLayer(ModelSpec m, int seqLen, ParallelLayout l)
    {
        double sLocal = (double)seqLen / l.Cp, b = l.MicroBatch, h = m.Hidden;
        if (l.Recompute == Recompute.Full) return 2 * sLocal * b * h;
        double mlp = 3 * h + (m.GatedFfn ? 8.0 : 4.0) * m.Ffn;
        double perToken = 7 * h + 4.0 * m.KvDim + 4 * h + m.ActiveExperts * mlp;
        double linear = sLocal * b * perToken / l.Tp;
        double scores = l.Recompute == Recompute.None ? 5.0 * m.Heads * sLocal * seqLen * b / l.Tp : 0;
        return linear + scores;
    }

    /// <summary>
    /// Activation bytes of one layer for one micro-batch that sequence parallelism saves on one GPU: without it the
    /// h-wide tensors outside the tensor-parallel layers (the two norms' inputs, the inputs of the column-parallel layers
    /// and the dropout masks: 10·s·b·h bytes, Korthikanti et al. 2022 Table 2) are whole on every TP rank; with it, 1/t.
    /// </summary>
    public static double SequenceParallelSavingPerLayer(ModelSpec m, int seqLen, ParallelLayout l) =>
        l.Recompute == Recompute.Full ? 0 : 10.0 * seqLen / l.Cp * l.MicroBatch * m.Hidden * (1 - 1.0 / l.Tp);

    public static double ActivationBytes(ModelSpec m, TrainingRun run, ParallelLayout l)
    {
        long microBatches = run.BatchSequences / ((long)l.Dp * l.MicroBatch);
        double inFlight = Math.Min(microBatches, l.Pp);
        if (l.Interleave > 1) inFlight *= 1 + (l.Pp - 1.0) / (l.Pp * l.Interleave);
        double layers = (double)m.Layers / l.Pp * inFlight;
        double logits = l.Pp == 1 ? 4.0 * run.SeqLen / l.Cp * l.MicroBatch * m.Vocab / l.Tp : 0;   // fp32 logits for the loss
        return layers * ActivationBytesPerLayer(m, run.SeqLen, l) + logits;
    }
}
