using System.Diagnostics;
using Supercluster.Checkpointing;
using Supercluster.Data;
using Supercluster.Distributed;
using Supercluster.Model;
using Supercluster.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace Supercluster.Training;

/// <summary>What <c>bench</c> measures: the training step of a preset at a given size, as bench/pytorch_reference.py does it.</summary>
public sealed record BenchOptions
{
    [Flag("--model", "Preset to measure")]
    public string Model { get; init; } = "gpt2";
    [Flag("--batch-size", "Sequences per step")]
    public int BatchSize { get; init; } = 8;
    [Flag("--seq-len", "Tokens per sequence")]
    public int SeqLen { get; init; } = 1024;
    [Flag("--dtype", "fp32 or bf16")]
    public string Dtype { get; init; } = "bf16";
    [Flag("--device", "auto, cpu or cuda[:N]")]
    public string Device { get; init; } = "auto";
    [Flag("--steps", "Timed steps")]
    public int Steps { get; init; } = 20;
    [Flag("--warmup", "Untimed steps first")]
    public int WarmupSteps { get; init; } = 3;
    [Flag("--lr", "Constant learning rate")]
    public double Lr { get; init; } = 6e-4;
    [Flag("--seed", "Seed for initialisation and synthetic tokens")]
    public long Seed { get; init; } = 1337;
    /// <summary>llm.c shards to read (the reference reads the same tokens); null: deterministic synthetic tokens.</summary>
    [Flag("--data", "Prepared shards (the PyTorch reference reads the same); default synthetic tokens")]
    public string? DataDir { get; init; }
    /// <summary>Round the vocabulary tables up to a multiple of this (64/128 suit tensor cores); null: 128 on a GPU, 1 on a CPU.</summary>
    [Flag("--pad-vocab", "Round the vocabulary tables up to a multiple of this (default 128 on a GPU, 1 on a CPU)")]
    public int? PadVocab { get; init; }
    /// <summary>Optimizer, as train's --optimizer: auto, fused or torch (AdamW's implementations) or NAME[:IMPLEMENTATION] (see <see cref="Optimizers"/>).</summary>
    [Flag("--optimizer", "As train's: auto (AdamW; fused CUDA kernel where NVRTC is found), torch, fused, or NAME[:IMPLEMENTATION]")]
    public string Optimizer { get; init; } = "auto";
    /// <summary>Write the initial weights (Hugging Face layout) here, for the PyTorch reference to start from.</summary>
    [Flag("--save-init", "Write the initial weights (safetensors) for bench/pytorch_reference.py")]
    public string? SaveInit { get; init; }
    /// <summary>Peak FLOP/s for MFU when the device is not in the table (e.g. a CPU).</summary>
    [Flag("--peak-tflops", "Peak TFLOP/s for MFU where the device is not known (e.g. CPU)")]
    public double? PeakTflops { get; init; }
}

public sealed record BenchResult(
    string Device, string Dtype, long Parameters, int BatchSize, int SeqLen, int Steps,
    double TokensPerSecond, double MsPerStep, double? Mfu, double? PeakTflopsUsed, double? PeakMemoryGiB,
    double ForwardMs, double BackwardMs, double OptimizerMs, double DataMs, double FirstLoss, double LastLoss,
    int Vocab, int PaddedVocab, string Optimizer);

/// <summary>
/// Times training steps (median step time → tokens/s, MFU) and their phases (data, forward, backward, optimizer).
/// The step is <see cref="TrainStep"/>, exactly what <c>train</c> runs (one rank, no accumulation, clip 1.0, weight decay 0.1).
/// </summary>
public static class Benchmark
{
    public static BenchResult Run(BenchOptions o, TextWriter log)
    {
        if (o.BatchSize <= 0 || o.SeqLen <= 0 || o.Steps <= 0 || o.WarmupSteps < 0 || o.PadVocab <= 0)
            throw new BadInputException($"bench: --batch-size, --seq-len, --steps, --pad-vocab must be positive and --warmup ≥ 0 (got {o.BatchSize}, {o.SeqLen}, {o.Steps}, {o.PadVocab}, {o.WarmupSteps})");
        var device = DeviceSelect.Resolve(o.Device);
        var dtype = DeviceSelect.Dtype(o.Dtype);
        bool gpu = device.type == DeviceType.CUDA;
        if (gpu) torch.backends.cuda.matmul.allow_tf32 = true; // fp32 matmuls on tensor cores, as PyTorch's reference sets too

        var preset = ModelPresets.Get(o.Model);
        int vocab = o.DataDir is null ? preset.VocabSize : DatasetMeta.Load(o.DataDir).VocabSize;
        var config = (preset with { VocabSize = vocab, PadVocabMultiple = o.PadVocab ?? Trainer.DefaultPadVocab(device), SeqLen = Math.Max(preset.SeqLen, o.SeqLen) }).Validate();
        int padded = config.PaddedVocab;
        using var model = CausalLM.Create(config, o.Seed);
        if (o.SaveInit is not null)
        {
            string dir = Path.GetDirectoryName(Path.GetFullPath(o.SaveInit))!;
            Directory.CreateDirectory(dir);
            ModelCheckpoint.WriteModel(dir, model, "bench");
            if (Path.GetFileName(o.SaveInit) != ModelCheckpoint.ModelFile) File.Move(Path.Combine(dir, ModelCheckpoint.ModelFile), o.SaveInit, overwrite: true);
        }
        model.to(device);
        model.train();
        using var comm = new SingleProcess();
        using var step = new TrainStep(model, comm, new TrainStepOptions
        {
            BatchSize = o.BatchSize, SeqLen = o.SeqLen, WeightDecay = 0.1, GradClip = 1.0, Optimizer = o.Optimizer, ComputeDtype = dtype,
        });
        using var loader = o.DataDir is null ? null : new TokenDataLoader(o.DataDir, "train", o.BatchSize, o.SeqLen, seed: o.Seed);
        var synthetic = new Random((int)o.Seed);

        double? peak = o.PeakTflops * 1e12 ?? DeviceSelect.PeakFlops(device, dtype);
        double flopsPerToken = Planning.FlopsModel.ModelFlopsPerToken(config, o.SeqLen);
        long tokens = (long)o.BatchSize * o.SeqLen;
        log.WriteLine($"bench {o.Model}: {config.ParameterCount():N0} parameters (vocab {vocab}{(padded != vocab ? $" padded to {padded}" : "")}), batch {o.BatchSize} × {o.SeqLen}, {o.Dtype} on {device.type}");
        log.WriteLine(peak is { } pk ? $"peak used for MFU: {pk / 1e12:F0} TFLOP/s ({o.Dtype}{(o.PeakTflops is null ? ", vendor datasheet, dense" : ", --peak-tflops")})" : "peak: unknown for this device (pass --peak-tflops for MFU)");

        void Next(long[] x, long[] y)
        {
            if (loader is not null) loader.NextBatch(x, y);
            else for (int i = 0; i < tokens; i++) { x[i] = synthetic.Next(vocab); y[i] = synthetic.Next(vocab); }
        }
        var phaseClock = new PhaseClock();
        var phases = new List<double[]>();
        var steps = new List<double>();
        var routing = new List<double>();
        double firstLoss = double.NaN, lastLoss = double.NaN, peakMem = 0;
        // On a GPU the phase split needs a synchronise after each phase, which idles the GPU while the host queues the
        // next phase; so the step time comes from steps with one synchronise (at the loss read, as the PyTorch
        // reference does) and the split from the last few timed steps. On a CPU every step serves both.
        int phaseSteps = gpu ? Math.Clamp(o.Steps / 4, 1, 5) : o.Steps;
        int firstPhaseStep = o.WarmupSteps + o.Steps - phaseSteps;

        for (int s = 0; s < o.WarmupSteps + o.Steps; s++)
        {
            phaseClock.Synchronize = gpu && s >= firstPhaseStep;
            if (gpu) cuda.synchronize();
            phaseClock.Start();
            var result = step.Run(Next, accumulation: 1, o.Lr, phaseClock);
            double l = result.Loss;   // its loss read waits for the step (the reference's loss.item())
            double tStep = phaseClock.Total;
            if (s == 0) firstLoss = l;
            lastLoss = l;
            if (gpu) peakMem = Math.Max(peakMem, CudaDriver.UsedBytes(device.index) / (double)(1L << 30));
            if (s < o.WarmupSteps) continue;
            if (!phaseClock.Synchronize) steps.Add(tStep);
            if (s >= firstPhaseStep) phases.Add((double[])phaseClock.Milliseconds.Clone());
            if (result.Moe is not null) routing.Add(result.RoutingSeconds * 1000);
            log.WriteLine($"step {s - o.WarmupSteps + 1}/{o.Steps}: {tStep:F1} ms{(phaseClock.Synchronize ? " (phases timed)" : "")}, loss {l:F4}{(result.Moe is not null ? $", MoE routing/dispatch {result.RoutingSeconds * 1000:F1} ms" : "")}");
        }
        if (routing.Count > 0) log.WriteLine($"MoE routing and dispatch (router, sort, gather, scatter; forward only): median {routing.Order().ElementAt(routing.Count / 2):F1} ms per step");

        double Median(IEnumerable<double> v) { var a = v.Order().ToArray(); return a.Length % 2 == 1 ? a[a.Length / 2] : (a[a.Length / 2 - 1] + a[a.Length / 2]) / 2; }
        double ms = Median(steps);
        double tps = tokens / (ms / 1000);
        return new BenchResult(gpu ? (CudaDriver.Devices().FirstOrDefault(d => d.Index == device.index)?.Name ?? "cuda") : "cpu", o.Dtype,
            config.ParameterCount(), o.BatchSize, o.SeqLen, o.Steps, tps, ms, peak is { } p ? flopsPerToken * tps / p : null, peak / 1e12,
            gpu ? peakMem : null, Median(phases.Select(p => p[(int)StepPhase.Forward])), Median(phases.Select(p => p[(int)StepPhase.Backward])),
            Median(phases.Select(p => p[(int)StepPhase.Optimizer])), Median(phases.Select(p => p[(int)StepPhase.Data])),
            firstLoss, lastLoss, vocab, padded, step.Optimizer.Describe());
    }
}
