namespace Supercluster.Planning;

/// <summary>Seconds per optimizer step, split into where the time goes. Communication terms are the exposed (not overlapped) part.</summary>
public sealed record StepTime(double Compute, double Bubble, double TensorParallel, double ContextParallel, double ExpertAllToAll,
    double PipelineP2P, double DataParallel, double Optimizer, long MicroBatches)
{
    public double Total => Compute + Bubble + TensorParallel + ContextParallel + ExpertAllToAll + PipelineP2P + DataParallel + Optimizer;
}

/// <summary>Fractions of each collective hidden behind compute (0 = fully exposed).
/// <see cref="TensorParallelAsyncBackward"/>: the backward TP communication of the column-parallel linears runs under their
/// GEMMs as Megatron-LM does from 2022 (<c>LinearWithGradAccumulationAndAsyncCommunication</c>: the input gradient's
/// reduce-scatter, or all-reduce without sequence parallelism, under the wgrad GEMM; with sequence parallelism the input is
/// re-gathered under the dgrad GEMM instead of being kept); only what outlasts the GEMM is exposed. Off: Megatron-LM 2021,
/// Megatron-DeepSpeed 2021–22.</summary>
public sealed record OverlapAssumptions(double TensorParallel = 0, double ContextParallel = 0.5, double ExpertAllToAll = 0, double DataParallel = 1.0,
    bool TensorParallelAsyncBackward = false);

/// <summary>
/// Step time of one global batch on one GPU of the slowest stage.
/// Compute: the per-operation model (<see cref="ComputeModel"/>: every GEMM with its shape, FlashAttention, memory-bound ops)
/// for the slowest stage (a middle one, or the last with the output layer); with an explicit compute efficiency
/// (<c>--compute-efficiency</c>) instead hardware FLOPs / (GPUs in the model replica's slice × peak × efficiency).
/// Tensor parallelism (Shoeybi et al. 2019; Narayanan et al. 2021 §3.2): 2 all-reduces of b·s·h activations per layer in the
/// forward pass and 2 in the backward (+2 when the forward is recomputed); with sequence parallelism these are
/// reduce-scatter + all-gather pairs with the same volume.
/// Context parallelism (Liu et al. 2023 ring attention; Llama 3 §3.3.2 all-gather K/V): all-gather of K,V per layer forward,
/// all-gather + reduce-scatter backward.
/// Expert parallelism (Lepikhin et al. 2020 GShard): dispatch and combine all-to-alls of k·b·s·h per MoE layer, forward and backward.
/// Pipeline (Narayanan et al. 2021 §2.2): bubble (p−1)/v micro-batch times, i.e. a fraction (p−1)/(v·m+p−1) of the step;
/// p2p sends of b·s·h/t activations (scatter/gather optimization).
/// Data parallelism: ring all-reduce 2(n−1)/n·bytes/bandwidth of bf16 gradients over DP·CP ranks (ZeRO-1/2: reduce-scatter +
/// all-gather, same volume; ZeRO-3 adds weight all-gathers every micro-batch), overlapped with the backward of the last
/// micro-batch and the forward of the first (Megatron-LM overlap_grad_reduce / overlap_param_gather).
/// Optimizer: its memory-bound passes over the sharded fp32 state (<see cref="OptimizerStep"/>).
/// Hidden communication is not free (<see cref="ExposedUnder"/>): a collective running under compute takes a share of the
/// GPU (<see cref="ClusterSpec.CommSmShare"/>) for as long as it runs, so each hidden second costs that share of a second of
/// compute, booked with the collective's exposed time (per-operation model only; an explicit efficiency already includes it).
/// </summary>
public static class StepTimeModel
{
    const double ActBytes = 2; // bf16 activations and gradients on the wire

    /// <summary>The pipeline bubble as a fraction of the step, (p−1)/(v·m+p−1), which <c>plan</c> assumes and <c>train --pp</c> prints.</summary>
    public static double BubbleFraction(int stages, int microBatches, int interleave = 1) =>
        stages <= 1 ? 0 : (stages - 1.0) / (interleave * microBatches + stages - 1);

    /// <summary>Seconds a collective of <paramref name="comm"/> s adds to <paramref name="compute"/> s of work it runs under,
    /// when it slows that work by <paramref name="smShare"/> while it runs: what outlasts the (slowed) compute, or the slowdown
    /// itself, max(comm − compute, share·comm). (Work done under it: comm·(1 − share); if that finishes the compute, the
    /// collective's end bounds the pair; Calculon's overlap model, Isaev et al. 2023.)</summary>
    public static double ExposedUnder(double comm, double compute, double smShare) =>
        comm <= 0 ? 0 : Math.Max(comm - Math.Max(0, compute), smShare * comm);

    public static StepTime Estimate(ModelSpec m, TrainingRun run, ParallelLayout l, ClusterSpec c, OverlapAssumptions ov)
    {
        long micro = run.BatchSequences / ((long)l.Dp * l.MicroBatch);
        double tokensPerMicro = (double)l.MicroBatch * run.SeqLen;
        double passes = l.Recompute == Recompute.Full ? 3 : 2; // forward, backward, recomputed forward
        double tMicro, forwardShare;
        if (c.ComputeEfficiency > 0)
        {
            tMicro = FlopsModel.HardwareFlopsPerToken(m, run.SeqLen, l.Recompute) * tokensPerMicro / ((double)l.Tp * l.Cp * l.Pp)
                     / (c.Gpu.PeakTflops(run.Precision) * 1e12 * c.ComputeEfficiency);
            forwardShare = 1 / (passes + 1); // FLOPs: forward 1, backward 2, recomputed forward 1
        }
        else
        {
            var stage = ComputeModel.Stage(m, run, l, c.PacingGpu);
            tMicro = stage.Total;
            forwardShare = stage.Forward / stage.Total;
        }

        double layersPerStage = l.LayersPerMiddleStage(m.Layers);
        double localTokens = tokensPerMicro / l.Cp;

        bool perOp = c.ComputeEfficiency <= 0;
        double Share(long span) => perOp ? c.CommSmShare(span) : 0;
        double tpShare = Share(l.TpSpan);
        var tpLink = c.Link(l.TpSpan);
        double tpBytes = localTokens * m.Hidden * ActBytes;
        double tpOne = Collectives.RingAllReduce(tpBytes, l.Tp, tpLink.BytesPerSecond, tpLink.LatencySeconds);
        // 2 collectives per layer per forward pass (and recomputed forward), 2 in the backward (all-reduces, or with sequence
        // parallelism all-gather + reduce-scatter pairs of the same volume).
        double tpBackward = 2 * tpOne;
        if (ov.TensorParallelAsyncBackward && l.Tp > 1 && c.ComputeEfficiency <= 0)
        {
            // Each column-parallel linear (QKV, MLP up): its input gradient's reduce-scatter (all-reduce without SP) under its
            // wgrad GEMM and, with SP, its input's re-gather under its dgrad GEMM; only what outlasts the GEMM is exposed. With SP
            // the row-parallel linears' backward all-gathers stay exposed; without SP they have no backward communication.
            double half = Collectives.ReduceScatter(tpBytes, l.Tp, tpLink.BytesPerSecond, tpLink.LatencySeconds);
            tpBackward = l.SequenceParallel ? 2 * half : 0;
            foreach (var (dgrad, wgrad) in ComputeModel.ColumnParallelBackward(m, run, l, c.PacingGpu))
                tpBackward += l.SequenceParallel
                    ? ExposedUnder(half, wgrad, tpShare) + ExposedUnder(half, dgrad, tpShare)
                    : ExposedUnder(tpOne, wgrad, tpShare);
        }
        double tp = layersPerStage * (2 * (passes - 1) * tpOne + tpBackward);

        var cpLink = c.Link(l.CpSpan);
        double kvBytes = 2.0 * tokensPerMicro * m.KvDim * ActBytes / Math.Max(1, Math.Min(l.Tp, m.KvHeads)); // whole sequence's K,V
        double cp = layersPerStage * (passes + 1) * Collectives.AllGather(kvBytes, l.Cp, cpLink.BytesPerSecond, cpLink.LatencySeconds);

        double ep = 0;
        if (m.IsMoE)
        {
            var epLink = c.Link(l.EpSpan);
            double routed = localTokens / l.Tp * m.ActiveExperts * m.Hidden * ActBytes;
            ep = layersPerStage * 2 * passes * Collectives.AllToAll(routed, l.Ep, epLink.BytesPerSecond, epLink.LatencySeconds);
        }

        // A fixed hidden share of TP/CP/EP slows the compute it hides under by the link's SM share.
        double Hidden(double comm, double share, double smShare) => comm * (1 - share) + comm * share * smShare;
        double tpExposed = Hidden(tp, ov.TensorParallel, tpShare), cpExposed = Hidden(cp, ov.ContextParallel, Share(l.CpSpan));
        double epExposed = m.IsMoE ? Hidden(ep, ov.ExpertAllToAll, Share(l.EpSpan)) : 0;
        double perMicroComm = tpExposed + cpExposed + epExposed;
        double tSlot = tMicro + perMicroComm;
        // The schedule (forward: its compute and one pass's share of the exposed communication); the bubble is what it adds to m slots.
        double forward = forwardShare * tMicro + perMicroComm / passes, backward = tSlot - forward;
        double bubble = PipelineSchedule.Seconds(forward, backward, micro, l.Pp, l.Interleave) - micro * tSlot;

        // p2p: each stage sends 1/t of the activation from each TP rank (Megatron's scatter/gather, Narayanan et al. 2021
        // §4.1; DeepSpeed's PartitionedTensor), and without sequence parallelism re-assembles it with an all-gather over
        // NVLink after every receive (with it, the activation is already split along the sequence).
        var ppLink = c.Link(l.PpSpan);
        double actBytes = localTokens * m.Hidden * ActBytes;
        double ppGather = l.SequenceParallel ? 0 : Collectives.AllGather(actBytes, l.Tp, tpLink.BytesPerSecond, tpLink.LatencySeconds);
        double p2p = l.Pp == 1 ? 0
            : PipelineSchedule.Transfers(run.Pipeline, micro, l.Pp, l.Interleave) * Collectives.PointToPoint(actBytes / l.Tp, ppLink.BytesPerSecond, ppLink.LatencySeconds)
              + 2.0 * (micro * l.Interleave + l.Pp - 1) * ppGather;

        var (dense, expert) = MemoryModel.ParamsPerGpu(m, l);
        long dpGroup = (long)l.Dp * l.Cp, expertGroup = dpGroup / l.Ep;
        var dpLink = c.Link(l.DpSpan);
        double dpShare = Share(l.DpSpan);
        double gradSync = Collectives.RingAllReduce(dense * ActBytes, dpGroup, dpLink.BytesPerSecond, dpLink.LatencySeconds)
                        + Collectives.RingAllReduce(expert * ActBytes, expertGroup, dpLink.BytesPerSecond, dpLink.LatencySeconds);
        double zero3Gathers = 0;
        if (l.Zero >= 3)
        {
            double gather = Collectives.AllGather(dense * ActBytes, dpGroup, dpLink.BytesPerSecond, dpLink.LatencySeconds)
                          + Collectives.AllGather(expert * ActBytes, expertGroup, dpLink.BytesPerSecond, dpLink.LatencySeconds);
            // every micro-batch re-gathers the weights for forward and backward (and the recomputed forward), prefetched under compute
            zero3Gathers = micro * ExposedUnder(passes * gather, ov.DataParallel * tMicro, dpShare);
        }
        double dpExposed = ExposedUnder(gradSync, ov.DataParallel * tMicro, dpShare) + zero3Gathers;

        double updatedParams = l.Zero >= 1 ? dense / dpGroup + expert / expertGroup : dense + expert;
        double optimizer = OptimizerStep.Seconds(c.Gpu, run.Precision, updatedParams, dense + expert);

        return new StepTime(micro * tMicro, bubble, micro * tpExposed, micro * cpExposed, micro * epExposed, p2p, dpExposed, optimizer, micro);
    }
}
