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
/// <c>train</c>), seconds. The step is <c>train</c>'s own (<see cref="TrainStep"/>: the layout's schedule, collectives and
/// optimizer) on the model cut to <see cref="ShallowLayers"/> and <see cref="DeepLayers"/> layers per pipeline stage, at the
/// run's micro-batch, sequence and micro-batches per step; each figure is the median over repetitions (as <c>train</c>
/// reports its step) of the slowest rank.
/// </summary>
/// <param name="ShallowStepSeconds">The whole step with <see cref="ShallowLayers"/> (D / 2) layers per stage.</param>
/// <param name="DeepStepSeconds">The whole step with <see cref="DeepLayers"/> = D = min(4, the run's layers per stage) per stage.</param>
/// <param name="ShallowCommunication">Seconds in collectives per communicator group in that step (what <c>train</c> logs as
/// comm_ms_by_group: transfers and the waits inside them), the slowest rank's, median.</param>
/// <param name="LinkBytesPerSecond">Bytes a rank sends per second in an MPI all-reduce of train's gradient bucket (min of N).</param>
/// <param name="LatencySeconds">Per-collective latency: a 4 KB all-reduce (min of N).</param>
/// <param name="PointToPointBytesPerSecond">A send of one micro-batch's activation to the neighbour rank (min of N).</param>
/// <param name="DeepPhaseSeconds">The deep cut's step by phase (<see cref="PhaseClock"/>: data, forward, backward, optimizer),
/// each the slowest rank's, median, and "jit": the .NET runtime's compilation time during the step on all its threads
/// (tiered re-JIT in the background): what <c>train</c> logs as rank_phase_ms, so the two can be compared phase by phase.</param>
public sealed record CpuMeasurements(int Ranks, int Threads, int Tp, int Pp, int Zero, int MicroBatches, int ShallowLayers, int DeepLayers,
    double ShallowStepSeconds, double DeepStepSeconds, double ShallowCommunicationSeconds, double DeepCommunicationSeconds,
    IReadOnlyDictionary<string, double> ShallowCommunication, IReadOnlyDictionary<string, double> DeepCommunication,
    double LinkBytesPerSecond, double LatencySeconds, double PointToPointBytesPerSecond,
    IReadOnlyDictionary<string, double>? DeepPhaseSeconds = null)
{
    /// <summary>What one more layer per stage adds to the step (its forwards, backwards, collectives and optimizer share).</summary>
    public double LayerSeconds => DeepLayers > ShallowLayers ? Math.Max(0, (DeepStepSeconds - ShallowStepSeconds) / (DeepLayers - ShallowLayers)) : 0;
}

/// <summary><c>train</c>'s step on CPU ranks, predicted from the measurements. <see cref="Communication"/> is what <c>train</c>
/// logs as rank_comm_ms (seconds inside collectives: <see cref="Transfer"/>, the wire time from bytes and the measured MPI
/// rates, plus <see cref="Waiting"/> for peers, which holds the pipeline <see cref="Bubble"/>); <see cref="Compute"/> is the rest.</summary>
public sealed record CpuStepPrediction(double Step, double Compute, double Bubble, double Communication, double Transfer,
    double Waiting, int MicroBatches, int StageLayers, long Parameters, IReadOnlyDictionary<string, double> CommunicationSecondsByGroup,
    IReadOnlyDictionary<string, double> TransferSecondsByGroup);

/// <summary>
/// Checks the planner against our own engine. On CPU ranks a step's cost is not a sum of kernel rates: TorchSharp's per-op
/// dispatch, autograd, ZeRO-3's recomputation, and above all the waits inside blocking collectives (two ranks on two cores
/// wait for each other at every TP all-reduce, ZeRO-3 gather and pipeline send) decide it. Timing layers alone missed those
/// waits (TP2 −29%, ZeRO-3 −47%, PP2 −20% quietly), so the calibration times <c>train</c>'s whole step, run by
/// <see cref="TrainStep"/> with the layout's real schedule and collectives, on the model cut to D = min(4, S) and D / 2
/// layers per stage (S: the run's layers per stage), every rank at once, alternately so that a change of load hits both.
/// Beyond D the step grows by the same amount per layer — every layer adds the same forwards, backwards, per-layer
/// collectives (TP's all-reduces, ZeRO-3's gathers and reduce-scatters) and, under 1F1B, the same share of the bubble — so
/// <c>step(S) = step(D) + (S − D) × (step(D) − step(D/2)) / (D − D/2)</c>, and the same for each group's collective time.
/// The wire time per group (bytes from <see cref="CommunicationVolume.Engine(ModelConfig,int,int,long,int,int,int,int,int,bool,int)"/>
/// ÷ the measured MPI rates + a latency per collective) splits communication into transfer and waiting.
/// </summary>
public static class CpuCalibration
{
    const int Reps = 7;
    const long BucketElements = 8 << 20; // DataParallel's all-reduce bucket (fp32 elements)

    static double Median(IEnumerable<double> xs) { var s = xs.OrderBy(x => x).ToList(); return s.Count == 0 ? 0 : s[s.Count / 2]; }

    /// <summary>One repetition (after a barrier, unless timed back to back); the slowest rank's figures (a collective waits for it), element by element.</summary>
    static double[] TimeRanks(ICommunicator comm, Func<double[]> a, bool barrier = true)
    {
        if (barrier) comm.Barrier();
        var mine = a();
        if (comm.WorldSize == 1) return mine;
        using var own = tensor(mine, dtype: ScalarType.Float64);
        using var all = zeros(mine.Length * comm.WorldSize, dtype: ScalarType.Float64);
        comm.AllGather(own, all);
        return all.view(comm.WorldSize, mine.Length).max(0).values.data<double>().ToArray();
    }

    /// <summary>Min of N: a short collective is either undisturbed or loses a whole scheduler slice, so the minimum is its cost.</summary>
    static double MinTime(ICommunicator comm, Action a, int reps = Reps)
    {
        a(); a();
        return Enumerable.Range(0, reps).Min(_ => TimeRanks(comm, () => { var sw = Stopwatch.StartNew(); a(); return [sw.Elapsed.TotalSeconds]; })[0]);
    }

    /// <summary>Layers per pipeline stage of the run (the most any stage holds: the slowest stage sets 1F1B's pace).</summary>
    public static int StageLayers(ModelConfig c, int pp) => PipelineStage.Split(c.NLayer, pp).Max(s => s.End - s.First);

    public static CpuMeasurements Measure(ModelConfig c, int microBatch, int seq, int microBatches, ICommunicator comm, int tp = 1, int pp = 1,
        int zero = 0, bool sequenceParallel = false)
    {
        using var scope = NewDisposeScope();
        var dims = ParallelDims.For(comm.WorldSize, tp, 1, pp);
        using var grid = new RankGrid(comm, dims);
        // The cuts: D = min(4, S) layers per stage and D / 2. Per layer the step grows faster from 2 to 4 layers than from 1 to
        // 2 (alternated in one process, 2 ranks: DP2 +25%, TP2 +98%, ZeRO-3 +58%; activations leave the caches), so the
        // slope comes from the upper half, and a stage of up to 4 layers is timed as it is.
        int stageLayers = StageLayers(c, pp), deep = Math.Min(4, stageLayers), shallow = Math.Max(1, deep / 2);
        var rng = new Random(1 + comm.Rank);
        void Next(long[] x, long[] y) { for (int i = 0; i < x.Length; i++) { x[i] = rng.Next(c.VocabSize); y[i] = rng.Next(c.VocabSize); } }

        // train's step as Trainer builds it, on the model cut to `perStage` layers per stage
        (CausalLM Model, TrainStep Step) Build(int perStage)
        {
            var model = CausalLM.Create(c with { NLayer = perStage * pp }, 1);
            var parallel = Parallelize.Apply(model, grid, new ParallelizeOptions(sequenceParallel));
            model.train();
            var stages = pp > 1 ? PipelineStage.ForRank(model, grid.Pp, parallel, 1) : null;
            var step = new TrainStep(model, comm, new TrainStepOptions { BatchSize = microBatch, SeqLen = seq, Zero = zero }, parallel, stages);
            return (model, step);
        }
        var depths = deep > shallow ? new[] { shallow, deep } : new[] { deep };
        var steps = depths.Select(Build).ToArray();
        var groups = new List<string>();
        var phases = new PhaseClock();
        int nPhases = phases.Milliseconds.Length + 1;   // and the JIT time
        double[] Run(TrainStep step)
        {
            var jit = System.Runtime.JitInfo.GetCompilationTime();
            var sw = Stopwatch.StartNew();
            phases.Start();
            var r = step.Run(Next, microBatches, 1e-4, phases);
            double t = sw.Elapsed.TotalSeconds;
            double jitSeconds = (System.Runtime.JitInfo.GetCompilationTime() - jit).TotalSeconds;
            var byGroup = r.CommSecondsByGroup ?? new Dictionary<string, double>();
            if (groups.Count == 0) groups.AddRange(byGroup.Keys.OrderBy(k => k, StringComparer.Ordinal));   // the same groups on every rank
            return [t, r.CommSeconds, .. phases.Milliseconds.Select(ms => ms / 1e3), jitSeconds, .. groups.Select(g => byGroup.GetValueOrDefault(g))];
        }
        foreach (var s in steps) { Run(s.Step); Run(s.Step); }   // warm-up: first-touch allocations, optimizer state
        var times = steps.Select(_ => new List<double[]>()).ToArray();
        for (int rep = 0; rep < Reps; rep++)
            for (int i = 0; i < steps.Length; i++)
                times[i].Add(TimeRanks(comm, () => Run(steps[i].Step), barrier: false));   // as train: steps back to back, no barrier between
        foreach (var s in steps) { s.Step.Dispose(); s.Model.Dispose(); }
        double Med(int depth, int column) => Median(times[depth].Select(t => t[column]));
        Dictionary<string, double> ByGroup(int depth) => groups.Select((g, j) => (g, Med(depth, 2 + nPhases + j))).Where(x => x.Item2 > 0).ToDictionary(x => x.g, x => x.Item2);
        int d = steps.Length - 1;

        double link = 0, latency = 0, p2p = 0;
        if (comm.WorldSize > 1)
        {
            double rankParameters = CommunicationVolume.Engine(c, tp, 0, pp).Parameters;
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
            comm.TakeCommunicationSeconds(); comm.TakeSentBytes();
        }
        return new CpuMeasurements(comm.WorldSize, torch.get_num_threads(), tp, pp, zero, microBatches, depths[0], depths[^1],
            Med(0, 0), Med(d, 0), Med(0, 1), Med(d, 1), ByGroup(0), ByGroup(d), link, latency, p2p,
            Enum.GetNames<StepPhase>().Select(n => n.ToLowerInvariant()).Append("jit").Select((name, k) => (name, Med(d, 2 + k))).ToDictionary());
    }

    /// <summary>Predicted step of <c>train</c> for the measured layout with the whole model (<paramref name="c"/>'s layers).</summary>
    public static CpuStepPrediction Predict(ModelConfig c, int microBatch, int seq, CpuMeasurements me, bool sequenceParallel = false)
    {
        int tp = me.Tp, pp = me.Pp, m = me.MicroBatches, dp = me.Ranks / (tp * pp);
        int S = StageLayers(c, pp);
        double span = me.DeepLayers - me.ShallowLayers;
        // from the deep cut (the stage itself when it has no more layers), by the slope between the cuts (≥ 0: noise aside, a layer costs)
        double Extend(double shallow, double deep) => span > 0 ? deep + (S - me.DeepLayers) * Math.Max(0, (deep - shallow) / span) : shallow;
        double step = Extend(me.ShallowStepSeconds, me.DeepStepSeconds);
        double communication = Math.Min(step, Extend(me.ShallowCommunicationSeconds, me.DeepCommunicationSeconds));
        var byGroup = me.ShallowCommunication.Keys.Union(me.DeepCommunication.Keys)
            .ToDictionary(g => g, g => Extend(me.ShallowCommunication.GetValueOrDefault(g), me.DeepCommunication.GetValueOrDefault(g)));

        // The wire time: bytes per group (one source) ÷ the measured rate + a latency per collective call.
        var bytes = CommunicationVolume.Engine(c, microBatch, seq, m, tp, 1, pp, dp, me.Zero, sequenceParallel);
        long buckets = (long)Math.Ceiling(CommunicationVolume.Engine(c, tp, 0, pp).Parameters / BucketElements);
        var transfer = new Dictionary<string, double>();
        foreach (var (group, b) in bytes)
        {
            double calls = 2 + group switch   // collectives per step: a few bookkeeping scalars each, plus
            {
                "tp" => 4.0 * S * m + 2,                                                    // f and g of attention and MLP, fwd + bwd
                "pp" => 2.0 * m,                                                            // an activation forward, its gradient back
                "dp_cp" or "dp" => me.Zero switch { 0 => buckets, 3 => 3.0 * (S + 3) * m, _ => 2 },   // ZeRO-3: gather, re-gather, reduce-scatter per unit
                _ => 1,
            };
            double rate = group == "pp" && me.PointToPointBytesPerSecond > 0 ? me.PointToPointBytesPerSecond : me.LinkBytesPerSecond;
            transfer[group] = rate > 0 ? b / rate + calls * me.LatencySeconds : 0;
        }
        double wire = Math.Min(communication, transfer.Values.Sum());
        double compute = step - communication;
        // 1F1B idles each stage for p − 1 micro-batch slots, inside its pipeline receives (so inside the communication)
        double bubble = pp > 1 ? Math.Min(communication, (pp - 1) * compute / m) : 0;
        return new CpuStepPrediction(step, compute, bubble, communication, wire, communication - wire, m, S,
            (long)CommunicationVolume.Engine(c, tp, 0, pp).Parameters, byGroup, transfer);
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
