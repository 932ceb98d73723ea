namespace Supercluster.Planning;

/// <summary>Activation recomputation (Korthikanti et al. 2022): none, selective (attention scores only), full (whole layer).</summary>
public enum Recompute { None, Selective, Full }

/// <summary>
/// How the GPUs are split. Rank order (innermost first) follows Megatron-LM: tensor, context, data (expert parallelism is
/// carved out of data parallelism), pipeline. A group is on NVLink when its span of consecutive ranks fits in one node.
/// GPUs used = Tp·Cp·Dp·Pp.
/// </summary>
public sealed record ParallelLayout(
    int Tp = 1, int Pp = 1, int Dp = 1, int Cp = 1, int Ep = 1,
    int MicroBatch = 1, int Interleave = 1, int Zero = 1, Recompute Recompute = Recompute.Selective)
{
    public long Gpus => (long)Tp * Pp * Dp * Cp;

    /// <summary>Span (in consecutive ranks) of each group: decides NVLink vs RDMA.</summary>
    public long TpSpan => Tp;
    public long CpSpan => (long)Tp * Cp;
    public long EpSpan => (long)Tp * Cp * Ep;
    public long DpSpan => (long)Tp * Cp * Dp;
    public long PpSpan => Gpus;

    public override string ToString() =>
        $"TP={Tp} PP={Pp}{(Interleave > 1 ? $"(v={Interleave})" : "")} DP={Dp} CP={Cp}{(Ep > 1 ? $" EP={Ep}" : "")} mb={MicroBatch} ZeRO-{Zero} recompute={Recompute.ToString().ToLowerInvariant()}";
}
