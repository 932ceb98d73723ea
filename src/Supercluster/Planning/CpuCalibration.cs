using System.Diagnostics;
using Supercluster.Distributed;
using Supercluster.Model;
using Supercluster.Parallelism;
using Supercluster.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Supercluster.Planning;

/// <summary>
/// What <c>plan --device cpu --calibrate</c> measures on every rank at once (ranks share the cores and memory, as in
/// <c>train</c>). Times are the step's own building blocks, run by the engine's own code at the run's shapes, seconds:
/// </summary>
/// <param name="LayerSeconds">Forward + backward of one transformer layer (this rank's TP shard), one micro-batch: the engine's
/// model cut to 1 and to D layers, timed in alternation; (T_D − T_1) / (D − 1), the slowest rank of each repetition (a
/// collective waits for it), the fastest of N repetitions.</param>
/// <param name="EndsSeconds">Embedding, final norm, head and loss, forward + backward: T_1 less a layer.</param>
/// <param name="Imbalance">Median over repetitions of (slowest rank − this rank) ÷ this rank: the share of the compute a rank
/// spends waiting in the next collective when ranks share the cores.</param>
/// <param name="OptimizerSeconds">The optimizer's update (train's default, AdamW) over this rank's parameters (its ZeRO shard).</param>
/// <param name="GradientPassSeconds">One elementwise pass over this rank's gradients (averaging, norm, zeroing).</param>
/// <param name="LinkBytesPerSecond">Bytes a rank sends per second in an MPI all-reduce of train's gradient bucket (min of N).</param>
/// <param name="LatencySeconds">Per-collective latency: a 4 KB all-reduce (min of N).</param>
/// <param name="PointToPointBytesPerSecond">A send of one micro-batch's activation to the neighbour rank (min of N).</param>
public sealed record CpuMeasurements(int Ranks, int Threads, int Tp, double LayerSeconds, double EndsSeconds, double Imbalance,
    double OptimizerSeconds, double GradientPassSeconds, long OptimizerElements, double LinkBytesPerSecond, double LatencySeconds,
    double PointToPointBytesPerSecond);

/// <summary><c>train</c>'s step on CPU ranks, predicted from the measurements; <see cref="Communication"/> is what <c>train</c>
/// logs as rank_comm_ms (transfers plus waiting for the slowest rank).</summary>
public sealed record CpuStepPrediction(double Step, double Compute, double Bubble, double Optimizer, double Communication, double Transfer,
    double Waiting, int MicroBatches, long Parameters, IReadOnlyDictionary<string, double> CommunicationSecondsByGroup);

/// <summary>
/// Checks the planner against our own engine. <c>train</c>'s step on CPU ranks is composed from building blocks timed here
/// with the engine's own code (so autograd, TorchSharp's per-op dispatch, memory-bound ops and the ranks' sharing of the
/// cores are in the figures, not modelled): one layer and the model's ends forward + backward at the run's micro-batch,
/// sequence and TP shard (the model cut to 1 and to up to 4 layers, parallelised as train does), the optimizer over the rank's
/// parameters, and MPI all-reduce / send at the sizes train uses. Per layout:
/// * compute: a pipeline stage runs its layers (+ the ends on the last stage) per micro-batch; 1F1B over m micro-batches
///   and p stages takes Σ stages + (m − 1) × the slowest stage (p = 1: m micro-batches);
/// * communication: bytes per group from <see cref="CommunicationVolume.Engine(ModelConfig,int,int,long,int,int,int,int,int,bool,int)"/>
///   ÷ the measured link rate, + a latency per collective; TP's collectives and ZeRO-3's per-unit gathers run inside the timed
///   layers (FullyShard applied as train does), so they are reported but not added again; waiting = the measured imbalance × compute;
/// * optimizer: AdamW's update + three gradient passes (averaging, norm, zeroing).
/// </summary>
public static class CpuCalibration
{
    const int Reps = 7;
    const long BucketElements = 8 << 20; // DataParallel's all-reduce bucket (fp32 elements)
    const int GradientPasses = 3;

    static double Median(IEnumerable<double> xs) { var s = xs.OrderBy(x => x).ToList(); return s[s.Count / 2]; }

    /// <summary>Each repetition after a barrier; (own seconds, slowest rank's seconds) per repetition.</summary>
    static List<(double Own, double Max)> TimeRanks(ICommunicator comm, Action a, int reps = Reps, int warmup = 2)
    {
        for (int i = 0; i < warmup; i++) a(); // first-touch allocations, autograd graph caches
        var times = new List<(double, double)>();
        var own = zeros(1); var all = zeros(comm.WorldSize);
        for (int i = 0; i < reps; i++)
        {
            comm.Barrier();
            var sw = Stopwatch.StartNew();
            a();
            double t = sw.Elapsed.TotalSeconds;
            own.fill_(t);
            if (comm.WorldSize > 1) comm.AllGather(own, all); else all.fill_(t);
            times.Add((t, all.max().ToDouble()));
        }
        return times;
    }

    /// <summary>Min of N: a short kernel is either undisturbed or loses a whole scheduler slice, so the minimum is its cost.</summary>
    static double MinTime(ICommunicator comm, Action a, int reps = Reps) => TimeRanks(comm, a, reps).Min(t => t.Max);

    public static CpuMeasurements Measure(ModelConfig c, int microBatch, int seq, ICommunicator comm, int tp = 1, int pp = 1, int zero = 0,
        bool sequenceParallel = false)
    {
        using var scope = NewDisposeScope();
        var dims = ParallelDims.For(comm.WorldSize, tp);   // the layers are timed with train's TP; PP and DP are composed
        using var grid = comm.WorldSize > 1 ? new RankGrid(comm, dims) : null;
        var rng = new Random(1);
        long[] Ids() => Enumerable.Range(0, microBatch * seq).Select(_ => (long)rng.Next(c.VocabSize)).ToArray();
        long[] x = Ids(), y = Ids();

        // The model cut to 1 and to D = min(L, 4) layers (the whole model when it is small), timed in alternation so that a
        // change of load hits both alike: a layer is (T_D − T_1) / (D − 1), the ends the rest of T_1.
        int deep = Math.Clamp(c.NLayer, 2, 4);
        var steps = new[] { 1, deep }.Select(layers =>
        {
            var model = CausalLM.Create(c with { NLayer = layers }, 1);
            var parallel = grid is null ? null : Parallelize.Apply(model, grid, new ParallelizeOptions(sequenceParallel));
            model.train();
            // ZeRO-3 as train runs it: each unit's parameters gathered around its forward and backward (FullyShard)
            var fsdp = zero == 3 ? new FullyShard(model, grid?.DpCp ?? comm, ScalarType.Float32) : null;
            Func<Tensor, Tensor, Tensor>? loss = parallel is { OwnsLoss: true } p ? p.Loss : null;
            return (Model: model, Fsdp: fsdp, Run: (Action)(() =>
            {
                using var s = NewDisposeScope();
                NextTokenLoss.Batch(model, x, y, microBatch, seq, CPU, loss).backward();
            }));
        }).ToArray();
        var times = new[] { new List<(double Own, double Max)>(), new List<(double Own, double Max)>() };
        for (int round = 0; round < Reps; round++)
            for (int i = 0; i < 2; i++)
                times[i].AddRange(TimeRanks(comm, steps[i].Run, reps: 1, warmup: round == 0 ? 2 : 0));
        foreach (var st in steps) { st.Fsdp?.Dispose(); st.Model.Dispose(); }
        // min of N: a load burst on the shared machine only ever adds time, so the fastest repetition is the undisturbed cost
        double t1 = times[0].Min(t => t.Max), tDeep = times[1].Min(t => t.Max);
        double layer = tDeep > t1 ? (tDeep - t1) / (deep - 1) : tDeep / (deep + 1);   // noise: the ends costing about a layer
        double imbalance = Median(times[1].Select(t => (t.Max - t.Own) / t.Own));

        // The optimizer's vector: this rank's parameters (its TP shard of the first stage), its 1/DP shard under ZeRO.
        int dp = comm.WorldSize / (tp * pp);
        double rankParameters = CommunicationVolume.Engine(c, tp, 0, pp).Parameters;
        long elements = Math.Max(1, (long)(rankParameters / (zero >= 1 ? dp : 1)));
        var param = randn(elements).mul_(0.02); var grad = randn(elements).mul_(1e-3);
        using var optimizer = Optimizers.Create("auto", ones(elements), 0.1);
        double optimizerSeconds = MinTime(comm, () => optimizer.Step(param, grad, 1e-4));
        long gradElements = Math.Max(1, (long)(rankParameters / (zero >= 2 ? dp : 1)));
        var g = zeros(gradElements); var h = ones(gradElements);
        double gradientPass = MinTime(comm, () => g.add_(h));

        double link = 0, latency = 0, p2p = 0;
        if (comm.WorldSize > 1)
        {
            long bucket = Math.Clamp((long)rankParameters, 1024, BucketElements), small = 1 << 10;
            var bl = zeros(bucket); var bs = zeros(small);
            double n = comm.WorldSize;
            double ts = MinTime(comm, () => comm.AllReduceSum(bs));
            latency = ts / (2 * (n - 1));   // a ring all-reduce: 2(n−1) steps
            double tl = MinTime(comm, () => comm.AllReduceSum(bl));
            link = Collectives.AllReduceSent(bucket * 4.0, comm.WorldSize) / Math.Max(1e-9, tl - ts);
            // one activation [B, T, h] to the paired rank (0↔1, 2↔3, …), as a pipeline stage sends it
            int peer = comm.Rank ^ 1;
            var act = zeros((long)microBatch * seq * c.NEmbd);
            double tp2p = MinTime(comm, () =>
            {
                if (peer >= comm.WorldSize) return;
                if (comm.Rank % 2 == 0) comm.Send(act, peer); else comm.Recv(act, peer);
            });
            p2p = act.numel() * 4.0 / Math.Max(1e-9, tp2p - latency);
        }
        return new CpuMeasurements(comm.WorldSize, torch.get_num_threads(), tp, layer, Math.Max(0, t1 - layer), imbalance, optimizerSeconds, gradientPass, elements, link, latency, p2p);
    }

    /// <summary>Predicted step of <c>train</c> for this layout on the measured ranks (the measurements taken with the same TP).</summary>
    public static CpuStepPrediction Predict(ModelConfig c, int microBatch, int seq, int accumulation, CpuMeasurements me, int tp = 1, int pp = 1,
        int zero = 0, bool sequenceParallel = false)
    {
        int dp = me.Ranks / (tp * pp);
        var stages = PipelineStage.Split(c.NLayer, pp);
        var perMicro = stages.Select((s, i) => (s.End - s.First) * me.LayerSeconds + (i == pp - 1 ? me.EndsSeconds : 0)).ToArray();
        double compute = accumulation * perMicro.Max();
        double bubble = perMicro.Sum() - perMicro.Max();   // 1F1B: Σ stages + (m − 1) × slowest = m × slowest + the rest once

        var bytes = CommunicationVolume.Engine(c, microBatch, seq, accumulation, tp, 1, pp, dp, zero, sequenceParallel);
        int layers = stages[0].End - stages[0].First;
        long buckets = (long)Math.Ceiling(CommunicationVolume.Engine(c, tp, 0, pp).Parameters / BucketElements);
        var seconds = new Dictionary<string, double>();
        foreach (var (group, b) in bytes)
        {
            // collectives per step (the latency term): a few bookkeeping scalars each, plus
            double calls = 2 + group switch
            {
                "tp" => 4.0 * layers * accumulation + 2,                                  // f and g of attention and MLP, fwd + bwd
                "pp" => 2.0 * accumulation,                                               // an activation forward, its gradient back
                "dp_cp" or "dp" => zero switch { 0 => buckets, 3 => 3.0 * (layers + 2) * accumulation, _ => 2 },
                _ => 1,
            };
            double rate = group == "pp" && me.PointToPointBytesPerSecond > 0 ? me.PointToPointBytesPerSecond : me.LinkBytesPerSecond;
            seconds[group] = rate > 0 ? b / rate + calls * me.LatencySeconds : 0;
        }
        double transfer = seconds.Sum(kv => kv.Value);
        // TP's collectives (and ZeRO-3's gathers and reduce-scatters) run inside the timed layers: reported, not added again
        double exposed = transfer - seconds.GetValueOrDefault("tp") - (zero == 3 ? seconds.GetValueOrDefault("dp_cp") : 0);
        double waiting = me.Ranks > 1 ? me.Imbalance * (compute + bubble) : 0;
        double optimizer = me.OptimizerSeconds + GradientPasses * me.GradientPassSeconds;
        double step = compute + bubble + exposed + optimizer;
        return new CpuStepPrediction(step, compute, bubble, optimizer, transfer + waiting, transfer, waiting, accumulation,
            (long)CommunicationVolume.Engine(c, tp, 0, pp).Parameters, seconds);
    }

    /// <summary>Parameters of the engine's model (CausalLM): layers + embeddings (+ positions and biases for GPT-2, tied head).</summary>
    public static long ParameterCount(ModelConfig c)
    {
        long h = c.NEmbd, kv = (long)c.NKvHead * c.HeadDim, f = c.FfnHidden, V = c.PaddedVocab;
        if (c.Family == ModelFamily.Llama)
            return c.NLayer * (h * (h + 2 * kv) + h * h + 3 * h * f + 2 * h) + 2 * V * h + h;
        long layer = h * 3 * h + 3 * h + h * h + h + h * f + f + f * h + h + 4 * h;
        return c.NLayer * layer + V * h + (long)c.SeqLen * h + 2 * h;
    }
}
