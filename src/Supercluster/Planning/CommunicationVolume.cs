using Supercluster.Model;

namespace Supercluster.Planning;

/// <summary>One rank's share of the model, as far as its communication goes (the rank's TP shard of its pipeline stage).</summary>
/// <param name="Layers">Transformer layers on this rank's stage.</param>
/// <param name="KvDimPerRank">Key/value width of this rank's heads (KV heads ÷ TP × head dim).</param>
/// <param name="Parameters">Dense parameters this rank holds (its TP shard of its stage): what its data-parallel group averages.</param>
/// <param name="ExpertParameters">Expert parameters this rank holds (averaged over the expert data-parallel group).</param>
/// <param name="SequenceParallelParameters">Replicated parameters used on sequence shards (norms, GPT-2's positions): summed over TP under SP.</param>
/// <param name="TiedParameters">A table both pipeline ends hold (GPT-2's tied embedding, this rank's rows): its gradient is exchanged between them.</param>
/// <param name="MoeLayers">Mixture-of-experts layers on this stage; <paramref name="ActiveExperts"/> experts per token.</param>
public sealed record CommShape(double Layers, long Hidden, long KvDimPerRank, double Parameters, bool FirstStage = true, bool LastStage = true,
    double ExpertParameters = 0, double SequenceParallelParameters = 0, double TiedParameters = 0, double MoeLayers = 0, int ActiveExperts = 1);

/// <summary>Bytes per element on the wire: activations (and their gradients), pipeline sends, gradients and parameters of data parallelism.</summary>
public sealed record WireBytes(double Activation, double Pipeline, double Gradient)
{
    /// <summary><c>train</c> on CPU ranks (MPI): fp32 everywhere.</summary>
    public static readonly WireBytes Fp32 = new(4, 4, 4);
}

/// <summary>How the step runs, where the engine and the planner's GPU assumptions differ.</summary>
/// <param name="Passes">Passes over each layer per micro-batch: forward + backward = 2, + 1 with full recomputation.</param>
/// <param name="RegatherKv">CP: K and V all-gathered again in the backward (Llama 3 frees them; the engine keeps them, and
/// reduce-scatters their gradients instead: one collective per tensor each way).</param>
/// <param name="PipelineScatterGather">PP: activations cut into TP pieces on the wire (Narayanan et al. 2021 §4.1); the engine sends whole ones.</param>
public sealed record StepShape(int MicroBatch, int SeqLen, long MicroBatches, int Passes = 2, bool RegatherKv = false, bool PipelineScatterGather = false);

/// <summary>
/// Bytes one rank sends per optimizer step, per communicator group (the names of <c>RankGrid</c>: tp, cp, pp, dp_cp, ep,
/// expert_dp), counted by the per-rank convention of <see cref="Collectives"/> (ring all-reduce 2(n−1)/n of the buffer,
/// reduce-scatter / all-gather (n−1)/n of the whole vector, a send its size): the same quantity every communicator counts,
/// so <c>train</c>'s measured <c>comm_bytes_by_group</c> is checked against it. With N = b·s/C tokens per micro-batch on a
/// rank, a = N·h activation bytes and m micro-batches:
/// <list type="bullet">
/// <item>tp (Shoeybi et al. 2019): per micro-batch, 2·passes all-reduces of a per layer (f and g of attention and MLP),
///   one for the vocabulary-parallel embedding (first stage), one for the head's input gradient and the vocabulary-parallel
///   cross-entropy's max all-gather and two all-reduces of N fp32 (last stage); per step the squared norm (fp64). With
///   sequence parallelism each all-reduce is an all-gather + reduce-scatter pair of the same volume (Korthikanti et al. 2022),
///   plus one all-reduce of the gradients of the sequence-parallel parameters.</item>
/// <item>cp (Llama 3 §3.3.2): per layer, K and V of the whole sequence (b·s·kv/T each) all-gathered forward and
///   reduce-scattered backward (or all-gathered again, <see cref="StepShape.RegatherKv"/>).</item>
/// <item>pp (Narayanan et al. 2021): per micro-batch an activation b·(s/C)·h forward (all but the last stage) and its
///   gradient backward (all but the first); per step the tied table's gradient between the ends, the squared norm and the loss.</item>
/// <item>dp_cp (gradients average over DP × CP): all-reduce of the flat gradients (padded to a multiple of the group);
///   ZeRO-1/2 reduce-scatter + parameter all-gather + the norm; ZeRO-3 (FSDP) per micro-batch an all-gather forward, again
///   backward and a reduce-scatter of every unit (the tied table twice: embedding and head); and the step's loss.</item>
/// <item>ep / expert_dp (GShard): dispatch and combine all-to-alls of k·N·h/T per MoE layer, each pass; expert gradients
///   all-reduced over the ranks holding the same experts.</item>
/// </list>
/// Bookkeeping scalars (loss, squared norm) are counted too, so the engine's count matches exactly.
/// </summary>
public static class CommunicationVolume
{
    const double Fp32 = 4, Fp64 = 8;

    public static IReadOnlyDictionary<string, double> PerStep(CommShape r, StepShape s, int tp, int cp, int pp, int dp, int ep, int zero, bool sequenceParallel, WireBytes w)
    {
        var bytes = new Dictionary<string, double>();
        double m = s.MicroBatches;
        double tokens = (double)s.MicroBatch * s.SeqLen / cp;                     // N: this rank's tokens per micro-batch
        double a = tokens * r.Hidden * w.Activation;

        if (tp > 1)
        {
            double ar = Collectives.AllReduceSent(a, tp);
            double perMicro = r.Layers * 2 * s.Passes * ar + (r.FirstStage ? ar : 0);
            if (r.LastStage)
                perMicro += ar + Collectives.AllGatherSent(tp * tokens * Fp32, tp) + 2 * Collectives.AllReduceSent(tokens * Fp32, tp);
            bytes["tp"] = m * perMicro + Collectives.AllReduceSent(Fp64, tp)
                + (sequenceParallel ? Collectives.AllReduceSent(r.SequenceParallelParameters * w.Gradient, tp) : 0);
        }
        if (cp > 1)
        {
            double kv = (double)s.MicroBatch * s.SeqLen * r.KvDimPerRank * w.Activation;   // K (or V) of the whole sequence
            int perTensor = s.RegatherKv ? s.Passes + 1 : 2;
            bytes["cp"] = m * r.Layers * 2 * perTensor * Collectives.AllGatherSent(kv, cp);
        }
        if (pp > 1)
        {
            double send = tokens * r.Hidden * w.Pipeline / (s.PipelineScatterGather ? tp : 1);
            bytes["pp"] = m * ((r.LastStage ? 0 : send) + (r.FirstStage ? 0 : send))
                + (r.FirstStage || r.LastStage ? r.TiedParameters * w.Gradient : 0)
                + Collectives.AllReduceSent(Fp64, pp) + Collectives.AllReduceSent(Fp32, pp);
        }
        long group = (long)dp * cp;
        if (group > 1)
        {
            double padded = Math.Ceiling(r.Parameters / group) * group * w.Gradient;
            double sync = zero switch
            {
                0 => Collectives.AllReduceSent(padded, group),
                1 or 2 => Collectives.ReduceScatterSent(padded, group) + Collectives.AllGatherSent(padded, group) + Collectives.AllReduceSent(Fp64, group)
                    + (zero == 1 && pp > 1 && r.LastStage && r.TiedParameters > 0 ? Collectives.AllReduceSent(Fp64, group) : 0),
                _ => m * (s.Passes + 1) * Collectives.AllGatherSent(padded + r.TiedParameters * w.Gradient, group) + Collectives.AllReduceSent(Fp64, group),
            };
            // The step's loss: fp64 in the plain step, the pipeline's fp32 accumulator under PP.
            bytes["dp_cp"] = sync + Collectives.AllReduceSent(pp > 1 ? Fp32 : Fp64, group);
        }
        if (r.MoeLayers > 0 && ep > 1)
            bytes["ep"] = m * r.MoeLayers * 2 * s.Passes * (ep - 1.0) / ep * r.ActiveExperts * tokens / tp * r.Hidden * w.Activation;
        if (r.ExpertParameters > 0 && group / ep > 1)
            bytes["expert_dp"] = Collectives.AllReduceSent(r.ExpertParameters * w.Gradient, group / ep);
        return bytes;
    }

    /// <summary>
    /// The share of <c>train</c>'s model one rank holds at TP rank shards × pipeline stage <paramref name="stage"/> of
    /// <paramref name="stages"/> (the engine's parameters, counted from Gpt2.cs / Llama.cs as <see cref="CpuCalibration.ParameterCount"/>:
    /// column-parallel q/k/v, MLP up/gate and the vocabulary tables split over TP; biases of row-parallel layers and norms replicated).
    /// </summary>
    public static CommShape Engine(ModelConfig c, int tp = 1, int stage = 0, int stages = 1)
    {
        var (first, end) = Parallelism.PipelineStage.Split(c.NLayer, stages)[stage];
        int layers = end - first;
        bool isFirst = stage == 0, isLast = stage == stages - 1;
        long h = c.NEmbd, kv = (long)c.NKvHead * c.HeadDim, f = c.FfnHidden, v = c.PaddedVocab;
        double table = (double)v * h / tp;
        double parameters, sequenceParallel, tied = 0;
        if (c.Family == ModelFamily.Llama)
        {
            sequenceParallel = layers * 2.0 * h + (isLast ? h : 0);
            parameters = layers * ((2.0 * h * h + 2.0 * h * kv + 3.0 * h * f) / tp) + sequenceParallel + (isFirst ? table : 0) + (isLast ? table : 0);
        }
        else
        {
            sequenceParallel = layers * 4.0 * h + (isFirst ? (double)c.SeqLen * h : 0) + (isLast ? 2.0 * h : 0);
            double sharded = 3.0 * h * h + 3 * h + h * h + h * f + f + f * h;
            parameters = layers * (sharded / tp + 2.0 * h) + sequenceParallel + (isFirst || isLast ? table : 0);
            tied = table;   // used by the embedding and the head: exchanged between the pipeline ends, gathered twice under FSDP
        }
        return new CommShape(layers, h, kv / tp, parameters, isFirst, isLast, SequenceParallelParameters: sequenceParallel, TiedParameters: tied);
    }

    /// <summary><c>train</c>'s step: <see cref="PerStep"/> of the rank at <paramref name="stage"/> with the engine's choices (fp32 on MPI, K/V kept, whole activations sent).</summary>
    public static IReadOnlyDictionary<string, double> Engine(ModelConfig c, int batchSize, int seqLen, long microBatches,
        int tp = 1, int cp = 1, int pp = 1, int dp = 1, int zero = 0, bool sequenceParallel = false, int stage = 0) =>
        PerStep(Engine(c, tp, stage, pp), new StepShape(batchSize, seqLen, microBatches), tp, cp, pp, dp, 1, zero, sequenceParallel, WireBytes.Fp32);

    /// <summary>
    /// The planner's GPU run: a rank of the busiest stage (a middle one when there are more than two; else the first, which
    /// with one stage is also the last), bf16 activations and gradients (StepTimeModel's assumptions: K/V re-gathered in the
    /// backward, scatter/gather of pipeline sends, full recomputation adds a forward).
    /// </summary>
    public static IReadOnlyDictionary<string, double> Plan(ModelSpec m, TrainingRun run, ParallelLayout l)
    {
        var (dense, expert) = MemoryModel.ParamsPerGpu(m, l);
        if (!m.IsMoE) (dense, expert) = (dense + expert, 0);   // a dense model's MLP is its one "expert" there, averaged over all of DP
        bool middle = l.Pp > 2;
        var shape = new CommShape(l.LayersPerMiddleStage(m.Layers), m.Hidden, m.KvDim / Math.Max(1, Math.Min(l.Tp, m.KvHeads)), dense,
            FirstStage: !middle, LastStage: l.Pp == 1, ExpertParameters: expert,
            SequenceParallelParameters: l.LayersPerMiddleStage(m.Layers) * 2.0 * m.Hidden,
            TiedParameters: m.TiedEmbeddings && l.Pp > 1 ? (double)m.Vocab * m.Hidden / l.Tp : 0,
            MoeLayers: (double)m.MoeLayers / l.Pp, ActiveExperts: m.ActiveExperts);
        long micro = run.BatchSequences / ((long)l.Dp * l.MicroBatch);
        var step = new StepShape(l.MicroBatch, run.SeqLen, micro, l.Recompute == Recompute.Full ? 3 : 2, RegatherKv: true, PipelineScatterGather: true);
        return PerStep(shape, step, l.Tp, l.Cp, l.Pp, l.Dp, l.Ep, l.Zero, l.SequenceParallel, new WireBytes(2, 2, 2));
    }
}
