namespace Supercluster.Planning;

/// <summary>Activation recomputation (Korthikanti et al. 2022): none, selective (attention scores only), full (whole layer).</summary>
public enum Recompute { None, Selective, Full }

/// <summary>
/// How the GPUs are split. Rank order (innermost first) follows Megatron-LM: tensor, context, data (expert parallelism is
/// carved out of data parallelism), pipeline. A group is on NVLink when its span of consecutive ranks fits in one node.
/// GPUs used = Tp·Cp·Dp·Pp.
/// <see cref="SequenceParallel"/>: norms, dropout and residual adds are split over the TP ranks (Korthikanti et al. 2022);
/// without it every TP rank repeats them on the whole h (Megatron-LM 2021).
/// <see cref="UnevenEnds"/>: the first and last pipeline stages hold one layer fewer, to make room for the embedding and
/// the output layer (Llama 3, Meta 2024 §3.3.2: 126 layers on 16 stages); then PP·v must divide layers + 2.
/// </summary>
public sealed record ParallelLayout(
    int Tp = 1, int Pp = 1, int Dp = 1, int Cp = 1, int Ep = 1,
    int MicroBatch = 1, int Interleave = 1, int Zero = 1, Recompute Recompute = Recompute.Selective,
    bool SequenceParallel = true, bool UnevenEnds = false)
{
    /// <summary>Layers held by one GPU of a middle stage (the most of any stage).</summary>
    public double LayersPerMiddleStage(int layers) => UnevenEnds && Pp > 1 ? (layers + 2.0) / Pp : (double)layers / Pp;

    /// <summary>Layers held by one GPU of the last stage (it also runs the output layer and the loss).</summary>
    public double LayersOnLastStage(int layers) => LayersPerMiddleStage(layers) - (UnevenEnds && Pp > 1 ? 1 : 0);

    public long Gpus => (long)Tp * Pp * Dp * Cp;

    /// <summary>Span (in consecutive ranks) of each group: decides NVLink vs RDMA.</summary>
    public long TpSpan => Tp;
    public long CpSpan => (long)Tp * Cp;
    public long EpSpan => (long)Tp * Cp * Ep;
    public long DpSpan => (long)Tp * Cp * Dp;
    public long PpSpan => Gpus;

    public override string ToString() =>
        $"TP={Tp} PP={Pp}{(Interleave > 1 ? $"(v={Interleave})" : "")}{(UnevenEnds && Pp > 1 ? "(uneven ends)" : "")} DP={Dp} CP={Cp}{(Ep > 1 ? $" EP={Ep}" : "")} mb={MicroBatch} ZeRO-{Zero} recompute={Recompute.ToString().ToLowerInvariant()}";
}
