namespace Supercluster.Training;

/// <summary>Everything a training run needs; stored as RUN_DIR/config.json so the run can be reproduced.</summary>
public sealed record TrainOptions
{
    public required string DataDir { get; init; }
    public required string OutDir { get; init; }
    public string Model { get; init; } = "small";
    public int? NLayer { get; init; }
    public int? NHead { get; init; }
    public int? NEmbd { get; init; }
    public int? SeqLen { get; init; }
    public int BatchSize { get; init; } = 8;
    /// <summary>Tokens per optimizer step across all ranks; gradient accumulation = this / (batch · seq_len · world).</summary>
    public long? TotalBatchTokens { get; init; }
    public int Steps { get; init; } = 100;
    public double Lr { get; init; } = 1e-3;
    public int? Warmup { get; init; }
    public double MinLrRatio { get; init; } = 0.1;
    public double WeightDecay { get; init; } = 0.1;
    public double GradClip { get; init; } = 1.0;
    public string Device { get; init; } = "auto";
    public string Dtype { get; init; } = "fp32";
    public long Seed { get; init; } = 1337;
    public int EvalEvery { get; init; } = 0;
    public long EvalTokens { get; init; } = Evaluator.DefaultTokens;
    public int SampleEvery { get; init; } = 0;
    public int SampleTokens { get; init; } = 64;
    public int CheckpointEvery { get; init; } = 0;
    public int KeepCheckpoints { get; init; } = 3;
    /// <summary>null: start fresh (refuse a run directory that has checkpoints); "auto": newest complete checkpoint if any; else a path.</summary>
    public string? Resume { get; init; }
    public string? InitFrom { get; init; }
    public string? Fault { get; init; }
    /// <summary>Collectives: auto (single process alone, NCCL on GPUs, else MPI), mpi or nccl.</summary>
    public string Backend { get; init; } = "auto";
    /// <summary>0: replicated optimizer state; 1: ZeRO-1, optimizer state sharded across ranks.</summary>
    public int Zero { get; init; } = 0;
    /// <summary>Round the vocabulary tables up to a multiple of this; null: 128 on a GPU (tensor-core tiles), 1 on a CPU.</summary>
    public int? PadVocab { get; init; }
    /// <summary>auto: the fused CUDA AdamW kernel when NVRTC is found and the parameters are on a GPU; torch: always torch ops.</summary>
    public string Optimizer { get; init; } = "auto";

    public void Validate()
    {
        void Positive(string flag, double v) { if (!(v > 0)) throw new BadInputException($"{flag} = {v}, expected a positive number"); }
        Positive("--batch-size", BatchSize); Positive("--steps", Steps); Positive("--lr", Lr);
        if (SeqLen is { } t) Positive("--seq-len", t);
        if (NLayer is { } l) Positive("--n-layer", l);
        if (NHead is { } h) Positive("--n-head", h);
        if (NEmbd is { } e) Positive("--n-embd", e);
        if (TotalBatchTokens is { } tb) Positive("--total-batch-tokens", tb);
        if (Warmup is < 0) throw new BadInputException($"--warmup = {Warmup}, expected ≥ 0");
        if (MinLrRatio is < 0 or > 1) throw new BadInputException($"--min-lr-ratio = {MinLrRatio}, expected 0..1");
        if (WeightDecay < 0) throw new BadInputException($"--weight-decay = {WeightDecay}, expected ≥ 0");
        if (GradClip < 0) throw new BadInputException($"--grad-clip = {GradClip}, expected ≥ 0 (0 disables clipping)");
        if (EvalEvery < 0 || SampleEvery < 0 || CheckpointEvery < 0) throw new BadInputException("--eval-every, --sample-every and --checkpoint-every must be ≥ 0 (0 = only at the end / never)");
        if (EvalTokens <= 0) throw new BadInputException($"--eval-tokens = {EvalTokens}, expected a positive number");
        if (KeepCheckpoints <= 0) throw new BadInputException($"--keep-checkpoints = {KeepCheckpoints}, expected ≥ 1");
        if (!Directory.Exists(DataDir)) throw new BadInputException($"--data: directory '{DataDir}' does not exist (run prepare first)");
        if (PadVocab is <= 0) throw new BadInputException($"--pad-vocab = {PadVocab}, expected a positive multiple (1 = no padding)");
        AdamW.ParseImplementation(Optimizer);
        if (Zero is not (0 or 1)) throw new BadInputException($"--zero = {Zero}, expected 0 or 1");
        FaultPlan.Parse(Fault);
    }
}
