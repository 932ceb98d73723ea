using System.Globalization;
using Supercluster.Planning;

namespace Supercluster.Cli.Commands;

/// <summary>Human-readable text for <c>plan</c>: the numbers, then the assumptions they rest on.</summary>
static class PlanReport
{
    static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    static string Gb(double bytes) => (bytes / 1e9).ToString("F1", Inv) + " GB";
    static string Ms(double s) => (s * 1e3).ToString("F1", Inv) + " ms";
    static string Pct(double f) => (f * 100).ToString("F1", Inv) + "%";
    static string N(double v, string fmt = "N0") => v.ToString(fmt, Inv);
    static string Params(double p) => p >= 1e12 ? (p / 1e12).ToString("F2", Inv) + "T" : p >= 1e9 ? (p / 1e9).ToString("F1", Inv) + "B" : (p / 1e6).ToString("F0", Inv) + "M";

    public static void WritePlan(TextWriter w, PlanInputs inputs, PlanResult r)
    {
        w.WriteLine($"Plan: {r.Model} ({Params(r.TotalParams)} params, {Params(r.ActiveParams)} active) on {N(r.GpusUsed)} of {N(r.GpusAvailable)} × {r.Gpu} ({N(r.Nodes)} nodes)");
        w.WriteLine($"Layout: {r.Layout}");
        w.WriteLine($"Run: {N(r.Tokens, "G3")} tokens, seq {r.SeqLen}, batch {N(r.BatchSequences)} sequences ({N(r.BatchTokens)} tokens), {N(r.Steps)} steps");
        w.WriteLine();
        var m = r.Memory;
        w.WriteLine($"Memory per GPU (busiest stage)   {(r.Fits ? "fits" : "DOES NOT FIT")}: {Gb(m.TotalBytes)} of {Gb(m.CapacityBytes)}");
        w.WriteLine($"  weights      {Gb(m.WeightsBytes),12}");
        w.WriteLine($"  gradients    {Gb(m.GradientsBytes),12}");
        w.WriteLine($"  optimizer    {Gb(m.OptimizerBytes),12}");
        w.WriteLine($"  activations  {Gb(m.ActivationsBytes),12}");
        w.WriteLine($"  reserved     {Gb(m.ReservedBytes),12}");
        w.WriteLine();
        var s = r.StepSeconds;
        w.WriteLine($"Step time {Ms(r.StepTimeSeconds)} ({s.MicroBatches} micro-batches per pipeline)");
        w.WriteLine($"  compute                  {Ms(s.Compute),12}");
        w.WriteLine($"  pipeline bubble          {Ms(s.Bubble),12}  ({Pct(r.PipelineBubbleFraction)} of step)");
        w.WriteLine($"  TP all-reduce (exposed)  {Ms(s.TensorParallel),12}");
        w.WriteLine($"  CP all-gather (exposed)  {Ms(s.ContextParallel),12}");
        w.WriteLine($"  EP all-to-all (exposed)  {Ms(s.ExpertAllToAll),12}");
        w.WriteLine($"  PP send/recv             {Ms(s.PipelineP2P),12}");
        w.WriteLine($"  DP grad sync (exposed)   {Ms(s.DataParallel),12}");
        w.WriteLine($"  optimizer update         {Ms(s.Optimizer),12}");
        if (r.CommunicationBytes is { Count: > 0 } cb)
            w.WriteLine($"Sent per GPU per step (busiest stage): {string.Join(", ", cb.Select(kv => $"{kv.Key} {Gb(kv.Value)}"))}");
        w.WriteLine();
        w.WriteLine("Throughput");
        w.WriteLine($"  tokens/s                 {N(r.TokensPerSecond)}");
        w.WriteLine($"  model TFLOP/s per GPU    {N(r.ModelTflopsPerGpu, "F0")}");
        w.WriteLine($"  MFU                      {Pct(r.Mfu)}   (hardware FLOPs utilisation incl. recompute: {Pct(r.Hfu)})");
        w.WriteLine($"  FLOPs per token          {N(r.ModelFlopsPerToken, "G4")} (total {N(r.TotalModelFlops, "G4")})");
        w.WriteLine();
        var rel = r.Reliability;
        w.WriteLine("Time and reliability");
        w.WriteLine($"  compute days (no failures) {N(r.ComputeDays, "F1")}");
        w.WriteLine($"  wall-clock days            {N(r.WallClockDays, "F1")}   ({N(r.DaysPerTrillionTokens, "F2")} days per trillion tokens)");
        w.WriteLine($"  GPU-hours                  {N(r.EnergyCost.GpuHours, "G4")}");
        w.WriteLine($"  interruptions              {N(rel.InterruptionsPerDay, "F2")} per day, one every {N(rel.MtbfHours, "F2")} h; {N(rel.ExpectedInterruptions, "F0")} expected in the run");
        w.WriteLine($"  checkpoint                 {Gb(rel.CheckpointBytes)} written in {N(rel.CheckpointWriteSeconds, "F1")} s; every {N(rel.CheckpointIntervalHours * 60, "F1")} min (Young/Daly)");
        w.WriteLine($"  goodput                    {Pct(rel.Goodput)}");
        w.WriteLine();
        var e = r.EnergyCost;
        w.WriteLine("Power, energy and cost");
        w.WriteLine($"  facility power             {N(e.FacilityMegawatts, "F2")} MW");
        w.WriteLine($"  energy                     {N(e.EnergyMWh, "N0")} MWh");
        w.WriteLine($"  cost                       ${N(e.TotalCostUsd / 1e6, "N1")}M (compute ${N(e.ComputeCostUsd / 1e6, "N1")}M + energy ${N(e.EnergyCostUsd / 1e6, "N1")}M)");
        if (inputs.Operations.CarbonKgPerKwh > 0) w.WriteLine($"  emissions                  {N(e.CarbonTonnes, "N0")} t CO2e");
        WriteAssumptions(w, inputs);
    }

    public static void WriteSearch(TextWriter w, PlanInputs inputs, SearchResult result)
    {
        w.WriteLine($"Search: {result.Legal} legal layouts of {inputs.Model.Name} on {N(inputs.Cluster.Gpus)} × {inputs.Cluster.Gpu.Name}, {result.Fitting} fit in memory");
        if (result.Best is null)
        {
            w.WriteLine(result.Reason);
            WriteAssumptions(w, inputs);
            return;
        }
        w.WriteLine($"{"#",2}  {"layout",-62} {"GPUs",7} {"mem GB",7} {"step s",8} {"MFU",6} {"days",8}");
        int i = 1;
        foreach (var r in result.Top)
            w.WriteLine($"{i++,2}  {r.Layout,-62} {r.GpusUsed,7} {(r.Memory.TotalBytes / 1e9).ToString("F1", Inv),7} {r.StepTimeSeconds.ToString("F2", Inv),8} {Pct(r.Mfu),6} {r.WallClockDays.ToString("F1", Inv),8}");
        w.WriteLine();
        w.WriteLine("Best layout in detail:");
        WritePlan(w, inputs with { Layout = result.Best.Parallelism }, result.Best);
    }

    public static void WriteSweep(TextWriter w, PlanInputs inputs, IReadOnlyList<SweepPoint> points, string svgPath)
    {
        w.WriteLine($"Sweep: {inputs.Model.Name} on {inputs.Cluster.Gpu.Name}, {N(inputs.Run.Tokens, "G3")} tokens, best layout at each size");
        w.WriteLine($"{"GPUs",8} {"used",8} {"layout",-62} {"days",8} {"MFU",6} {"goodput",8} {"int/day",8} {"MW",7} {"cost $M",9}");
        foreach (var p in points)
        {
            if (p.Best is not { } r) { w.WriteLine($"{p.Gpus,8} {"-",8} {p.Reason}"); continue; }
            w.WriteLine($"{p.Gpus,8} {r.GpusUsed,8} {r.Layout,-62} {r.WallClockDays.ToString("F1", Inv),8} {Pct(r.Mfu),6} {Pct(r.Reliability.Goodput),8} " +
                        $"{r.Reliability.InterruptionsPerDay.ToString("F2", Inv),8} {r.EnergyCost.FacilityMegawatts.ToString("F1", Inv),7} {(r.EnergyCost.TotalCostUsd / 1e6).ToString("F1", Inv),9}");
        }
        w.WriteLine($"Chart of days, MFU and goodput against GPUs written to {svgPath}");
        WriteAssumptions(w, inputs);
    }

    static void WriteAssumptions(TextWriter w, PlanInputs inputs)
    {
        w.WriteLine();
        w.WriteLine("Assumptions");
        foreach (var a in Assumptions.For(inputs))
            w.WriteLine($"  {a.Name,-20} {a.Value}  [{a.Source}]");
    }

    /// <summary>Each row's predicted step split by where it goes (% of the step; TP raw: before any overlap hides it).</summary>
    public static void WriteCalibrationBreakdown(TextWriter w, IReadOnlyList<CalibrationTable.Row> rows)
    {
        w.WriteLine($"{"run",-36} {"error",7} {"GEMM",6} {"attn",6} {"mem",6} {"bubble",6} {"TP",6} {"CP",6} {"EP",6} {"p2p",6} {"DP",6} {"optim",6} {"TP raw",6}");
        string P(double f) => (f * 100).ToString("F1", Inv);
        foreach (var r in rows)
        {
            var b = CalibrationTable.BreakdownOf(r.Run);
            w.WriteLine($"{r.Run.Name,-36} {(r.Error * 100).ToString("+0.0;-0.0", Inv) + "%",7} {P(b.Gemm),6} {P(b.Attention),6} {P(b.MemoryBound),6} {P(b.Bubble),6} " +
                        $"{P(b.TensorParallel),6} {P(b.ContextParallel),6} {P(b.ExpertAllToAll),6} {P(b.PipelineP2P),6} {P(b.DataParallel),6} {P(b.Optimizer),6} {P(b.TpRaw),6}");
        }
    }

    public static void WriteCalibration(TextWriter w, IReadOnlyList<CalibrationTable.Row> rows)
    {
        w.WriteLine($"{"run",-36} {"metric",-14} {"published",10} {"predicted",10} {"error",8}  source");
        foreach (var r in rows)
        {
            string metric = r.Run.Metric switch { PublishedMetric.HfuTflopsPerGpu => "HFU TFLOP/s", PublishedMetric.MfuTflopsPerGpu => "MFU TFLOP/s", _ => "s/step" };
            w.WriteLine($"{r.Run.Name,-36} {metric,-14} {N(r.Run.Published, "F2"),10} {N(r.Predicted, "F2"),10} {(r.Error * 100).ToString("+0.0;-0.0", Inv) + "%",8}  {r.Run.Source}");
        }
        w.WriteLine($"mean absolute error {Pct(CalibrationTable.MeanAbsoluteError(rows))} over {rows.Count} published runs; worst {Pct(rows.Max(r => Math.Abs(r.Error)))}");
    }

    /// <summary>train's communication on CPU ranks: bytes rank 0 sends per step, per group (what train logs as comm_bytes_by_group).</summary>
    public static void WriteCommunicationVolume(TextWriter w, string layout, IReadOnlyDictionary<string, double> bytes) =>
        w.WriteLine($"Predicted bytes sent per rank per step ({layout}, rank 0): " +
                    (bytes.Count == 0 ? "none (one rank)" : string.Join(", ", bytes.Select(kv => $"{kv.Key} {kv.Value / 1e6:F3} MB"))));

    public static void WriteCpuCalibration(TextWriter w, string model, Supercluster.Model.ModelConfig c, int microBatch, int seq, string layout,
        CpuMeasurements m, CpuStepPrediction p)
    {
        static string Groups(IReadOnlyDictionary<string, double> g) => g.Count == 0 ? "" : " (" + string.Join(", ", g.Select(kv => $"{kv.Key} {Ms(kv.Value)}")) + ")";
        w.WriteLine($"CPU calibration: {m.Ranks} rank(s) × {m.Threads} thread(s); train --model {model} ({N(p.Parameters)} parameters per rank, vocab {c.PaddedVocab}), " +
                    $"--batch-size {microBatch} --seq-len {seq}, {p.MicroBatches} micro-batch(es) per step, {layout}");
        w.WriteLine("Measured (train's step, every rank at once; median of the slowest rank):");
        w.WriteLine($"  {m.ShallowLayers} layer(s) per stage: step {Ms(m.ShallowStepSeconds)}, in collectives {Ms(m.ShallowCommunicationSeconds)}{Groups(m.ShallowCommunication)}");
        if (m.DeepLayers > m.ShallowLayers)
            w.WriteLine($"  {m.DeepLayers} layers per stage: step {Ms(m.DeepStepSeconds)}, in collectives {Ms(m.DeepCommunicationSeconds)}{Groups(m.DeepCommunication)}; a layer adds {Ms(m.LayerSeconds)}");
        if (m.Ranks > 1)
            w.WriteLine($"  MPI all-reduce {N(m.LinkBytesPerSecond / 1e9, "F2")} GB/s sent per rank, {N(m.LatencySeconds * 1e6, "F1")} µs per collective step; " +
                        $"point-to-point {N(m.PointToPointBytesPerSecond / 1e9, "F2")} GB/s");
        if (m.DeepPhaseSeconds?.GetValueOrDefault("jit") is > 0 and var jit)   // the runtime re-JITs in the background while tiered compilation settles
            w.WriteLine($"  the .NET runtime compiled for {Ms(jit)} during a step (median): not yet the steady state; DOTNET_TieredCompilation=0 on every rank removes it (docs/planning.md)");
        w.WriteLine($"Predicted train step ({p.StageLayers} layers per stage) {Ms(p.Step)}: outside collectives {Ms(p.Compute)}, communication {Ms(p.Communication)}{Groups(p.CommunicationSecondsByGroup)}" +
                    $" = transfers {Ms(p.Transfer)}{Groups(p.TransferSecondsByGroup)} + waiting {Ms(p.Waiting)}" + (p.Bubble > 0 ? $" (pipeline bubble {Ms(p.Bubble)})" : ""));
    }
}
