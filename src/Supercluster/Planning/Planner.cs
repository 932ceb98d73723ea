namespace Supercluster.Planning;

/// <summary>Everything the planner needs for one prediction.</summary>
public sealed record PlanInputs(ModelSpec Model, TrainingRun Run, ClusterSpec Cluster, ParallelLayout Layout,
    OverlapAssumptions Overlap, OperationsSpec Operations);

/// <summary>Every number of one prediction (serialised as-is by <c>plan --json</c>).</summary>
public sealed record PlanResult(
    string Model, long TotalParams, long ActiveParams, string Gpu, int GpusAvailable, long GpusUsed, long Nodes, string Layout,
    ParallelLayout Parallelism,
    int SeqLen, long BatchSequences, double BatchTokens, double Tokens, double Steps,
    double ModelFlopsPerToken, double HardwareFlopsPerToken, double TotalModelFlops,
    MemoryBreakdown Memory, bool Fits, StepTime StepSeconds, double StepTimeSeconds, double PipelineBubbleFraction,
    double TokensPerSecond, double ModelTflopsPerGpu, double Mfu, double Hfu,
    double ComputeDays, double WallClockDays, double DaysPerTrillionTokens, Reliability Reliability, EnergyCost EnergyCost)
{
    /// <summary>Bytes one GPU of the busiest stage sends per step, per group (<see cref="CommunicationVolume.Plan"/>).</summary>
    public IReadOnlyDictionary<string, double> CommunicationBytes { get; init; } = new Dictionary<string, double>();
}

/// <summary>Ties the models together: validates a layout against the model and cluster, then predicts the run.</summary>
public static class Planner
{
    /// <summary>Throws <see cref="BadInputException"/> with one line when the layout cannot run this model on this cluster.</summary>
    public static void ValidateLayout(ModelSpec m, TrainingRun run, ClusterSpec c, ParallelLayout l)
    {
        void Pos(int v, string name) { if (v <= 0) throw new BadInputException($"{name} {v} must be a positive integer"); }
        Pos(l.Tp, "--tp"); Pos(l.Pp, "--pp"); Pos(l.Dp, "--dp"); Pos(l.Cp, "--cp"); Pos(l.Ep, "--ep");
        Pos(l.MicroBatch, "--micro-batch"); Pos(l.Interleave, "--interleave");
        if (l.Zero is < 0 or > 3) throw new BadInputException($"--zero {l.Zero} must be 0, 1, 2 or 3");
        if (m.Heads % l.Tp != 0) throw new BadInputException($"--tp {l.Tp} does not divide the model's {m.Heads} attention heads");
        if (m.KvHeads % l.Tp != 0 && l.Tp % m.KvHeads != 0)
            throw new BadInputException($"--tp {l.Tp} and the model's {m.KvHeads} kv heads: one must divide the other");
        if (m.Ffn % l.Tp != 0) throw new BadInputException($"--tp {l.Tp} does not divide the model's ffn width {m.Ffn}");
        if (l.UnevenEnds && l.Pp > 1)
        {
            if ((m.Layers + 2) % ((long)l.Pp * l.Interleave) != 0)
                throw new BadInputException($"--pp-uneven-ends: --pp {l.Pp}{(l.Interleave > 1 ? $" × --interleave {l.Interleave}" : "")} does not divide the model's {m.Layers} layers + 2 (first and last stage hold one layer fewer)");
        }
        else if (m.Layers % ((long)l.Pp * l.Interleave) != 0)
            throw new BadInputException($"--pp {l.Pp}{(l.Interleave > 1 ? $" × --interleave {l.Interleave}" : "")} does not divide the model's {m.Layers} layers");
        if (m.Experts % l.Ep != 0) throw new BadInputException($"--ep {l.Ep} does not divide the model's {m.Experts} experts");
        if (l.Dp % l.Ep != 0) throw new BadInputException($"--ep {l.Ep} does not divide the data-parallel size {l.Dp} (experts are spread over data-parallel ranks)");
        if (run.SeqLen % l.Cp != 0) throw new BadInputException($"--cp {l.Cp} does not divide --seq {run.SeqLen}");
        if (run.BatchSequences % ((long)l.Dp * l.MicroBatch) != 0)
            throw new BadInputException($"global batch of {run.BatchSequences} sequences is not divisible by DP {l.Dp} × micro-batch {l.MicroBatch}");
        if (l.Gpus > c.Gpus) throw new BadInputException($"layout needs {l.Gpus} GPUs (TP·PP·DP·CP) but --gpus is {c.Gpus}");
    }

    public static PlanResult Plan(PlanInputs p)
    {
        var (m, run, c, l) = (p.Model, p.Run, p.Cluster, p.Layout);
        m.Validate(); run.Validate(); c.Validate(); p.Operations.Validate();
        if (c.Gpu.PeakTflops(run.Precision) <= 0)
            throw new BadInputException($"--precision {run.Precision.ToString().ToLowerInvariant()} is not supported by {c.Gpu.Name}: choose another precision");
        ValidateLayout(m, run, c, l);

        var memory = MemoryModel.Estimate(m, run, l, c.Gpu);
        var step = StepTimeModel.Estimate(m, run, l, c, p.Overlap);
        double modelFlops = FlopsModel.ModelFlopsPerToken(m, run.SeqLen);
        double hwFlops = FlopsModel.HardwareFlopsPerToken(m, run.SeqLen, l.Recompute);
        long gpus = l.Gpus;
        long nodes = (gpus + c.GpusPerNode - 1) / c.GpusPerNode;
        double stepSeconds = step.Total;
        double tokensPerSecond = run.BatchTokens / stepSeconds;
        double peak = c.Gpu.PeakTflops(run.Precision) * 1e12;
        double modelFlopsPerGpu = modelFlops * tokensPerSecond / gpus;
        double computeSeconds = run.Steps * stepSeconds;

        double checkpointBytes = m.TotalParams * (MemoryModel.WeightBytesPerParam + MemoryModel.OptimizerBytesPerParam);
        var ops = p.Operations;
        var rel = ReliabilityModel.Estimate(nodes, ops.FailureRate, checkpointBytes, ops.CheckpointWriteGBs * 1e9, ops.RestartMinutes * 60, computeSeconds);
        double wallSeconds = rel.Goodput > 0 ? computeSeconds / rel.Goodput : double.PositiveInfinity;
        var energy = EnergyCostModel.Estimate(gpus, nodes, c.Gpu.TdpWatts, ops, wallSeconds);

        return new PlanResult(m.Name, m.TotalParams, m.ActiveParams, c.Gpu.Name, c.Gpus, gpus, nodes, l.ToString(), l,
            run.SeqLen, run.BatchSequences, run.BatchTokens, run.Tokens, run.Steps,
            modelFlops, hwFlops, modelFlops * run.Tokens,
            memory, memory.Fits, step, stepSeconds, step.Bubble / stepSeconds,
            tokensPerSecond, modelFlopsPerGpu / 1e12, modelFlopsPerGpu / peak, hwFlops * tokensPerSecond / gpus / peak,
            computeSeconds / 86400, wallSeconds / 86400, wallSeconds / 86400 * 1e12 / run.Tokens, rel, energy)
        { CommunicationBytes = CommunicationVolume.Plan(m, run, l) };
    }
}
