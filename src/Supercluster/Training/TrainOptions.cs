namespace Supercluster.Training;

/// <summary>
/// Everything a training run needs; stored as RUN_DIR/config.json so the run can be reproduced. Each property's
/// <see cref="FlagAttribute"/> and initialiser are its train flag and default (the CLI is built from them).
/// </summary>
public sealed record TrainOptions
{
    [Flag("--data", "Directory written by prepare")]
    public required string DataDir { get; init; }
    [Flag("--out", "Run directory (metrics.jsonl, config.json, checkpoints/)")]
    public string OutDir { get; init; } = "runs/run";
    [Flag("--model", "Preset: tiny, small, gpt2, gpt2-medium, gpt2-large, gpt2-xl, llama-tiny, llama-small, llama-110m, moe-tiny, grok1-mini")]
    public string Model { get; init; } = "small";
    [Flag("--n-layer", "Override the preset's layer count")]
    public int? NLayer { get; init; }
    [Flag("--n-head", "Override the preset's head count")]
    public int? NHead { get; init; }
    [Flag("--n-embd", "Override the preset's width")]
    public int? NEmbd { get; init; }
    [Flag("--seq-len", "Training sequence length (≤ the model context; default the context)")]
    public int? SeqLen { get; init; }
    [Flag("--batch-size", "Sequences per micro-batch")]
    public int BatchSize { get; init; } = 8;
    /// <summary>Tokens per optimizer step across all ranks; gradient accumulation = this / (batch · seq_len · world).</summary>
    [Flag("--total-batch-tokens", "Tokens per optimizer step; gradient accumulation = this / (batch × seq-len)")]
    public long? TotalBatchTokens { get; init; }
    [Flag("--steps", "Optimizer steps")]
    public int Steps { get; init; } = 100;
    [Flag("--lr", "Peak learning rate")]
    public double Lr { get; init; } = 1e-3;
    [Flag("--warmup", "Linear warmup steps (default min(100, steps/10))")]
    public int? Warmup { get; init; }
    [Flag("--min-lr-ratio", "Final learning rate as a fraction of the peak")]
    public double MinLrRatio { get; init; } = 0.1;
    [Flag("--weight-decay", "AdamW decoupled weight decay (matrices only)")]
    public double WeightDecay { get; init; } = 0.1;
    [Flag("--grad-clip", "Clip the global gradient norm (0 = off)")]
    public double GradClip { get; init; } = 1.0;
    [Flag("--device", "auto, cpu or cuda[:N]")]
    public string Device { get; init; } = "auto";
    [Flag("--dtype", "fp32, or bf16 (bf16 compute weights; fp32 master weights, gradients and optimizer state)")]
    public string Dtype { get; init; } = "fp32";
    [Flag("--seed", "Seed for initialisation and data order")]
    public long Seed { get; init; } = 1337;
    [Flag("--eval-every", "Validation every N steps (and at the end; 0 = end only)")]
    public int EvalEvery { get; init; } = 0;
    [Flag("--eval-tokens", "Validation tokens per evaluation")]
    public long EvalTokens { get; init; } = Evaluator.DefaultTokens;
    [Flag("--sample-every", "Print a sample every N steps (and at the end; 0 = never)")]
    public int SampleEvery { get; init; } = 0;
    [Flag("--sample-tokens", "Tokens per training sample")]
    public int SampleTokens { get; init; } = 64;
    [Flag("--checkpoint-every", "Checkpoint every N steps (always at the end)")]
    public int CheckpointEvery { get; init; } = 0;
    [Flag("--keep-checkpoints", "Keep the newest K checkpoints")]
    public int KeepCheckpoints { get; init; } = 3;
    /// <summary>null: start fresh (refuse a run directory that has checkpoints); "auto": newest complete checkpoint if any; else a path.</summary>
    [Flag("--resume", "auto (newest complete checkpoint in --out, if any) or a checkpoint path")]
    public string? Resume { get; init; }
    [Flag("--init-from", "Start a gpt2 model from Hugging Face GPT-2 weights (model.safetensors)")]
    public string? InitFrom { get; init; }
    [Flag("--fault", "Fault injection: kill:rank=R:step=S, hang:rank=R:step=S, crash-in-checkpoint:step=S")]
    public string? Fault { get; init; }
    /// <summary>Collectives: auto (single process alone, NCCL on GPUs, else MPI), mpi or nccl.</summary>
    [Flag("--backend", "Collectives: auto (NCCL on GPUs, else MPI; none for one rank), mpi or nccl")]
    public string Backend { get; init; } = "auto";
    /// <summary>0: replicated optimizer state; 1: ZeRO-1, optimizer state sharded across ranks.</summary>
    [Flag("--zero", "1: shard optimizer state across ranks (ZeRO-1)")]
    public int Zero { get; init; } = 0;
    /// <summary>Round the vocabulary tables up to a multiple of this; null: 128 on a GPU (tensor-core tiles), 1 on a CPU.</summary>
    [Flag("--pad-vocab", "Round the vocabulary tables up to a multiple of this (default 128 on a GPU, 1 on a CPU; results are the same)")]
    public int? PadVocab { get; init; }
    /// <summary>auto: the fused CUDA AdamW kernel when NVRTC is found and the parameters are on a GPU; torch: always torch ops.</summary>
    [Flag("--optimizer", "auto (AdamW; fused CUDA kernel compiled with NVRTC where available), torch, fused, or NAME[:auto|fused|torch] of a registered optimizer: adamw, lion (Chen et al. 2023; torch ops)")]
    public string Optimizer { get; init; } = "auto";
    // Mixture of experts (Model/MoE.cs): the names plan uses.
    [Flag("--experts", "MoE: experts per MoE block (overrides the preset; 1 = dense)")]
    public int? Experts { get; init; }
    [Flag("--active-experts", "MoE: experts each token is routed to (top-K)")]
    public int? ActiveExperts { get; init; }
    [Flag("--moe-every", "MoE: every N-th block is a mixture of experts (default the preset's, 1)")]
    public int? MoeEvery { get; init; }
    [Flag("--aux-loss-coef", "MoE: weight of the Switch load-balancing loss E·Σ f·P")]
    public double AuxLossCoef { get; init; } = 0.01;
    [Flag("--z-loss-coef", "MoE: weight of the ST-MoE router z-loss")]
    public double ZLossCoef { get; init; } = 0.001;
    /// <summary>null: dropless; C: each expert takes at most ⌈C·tokens·K/E⌉ routed slots per micro-batch, the rest are dropped and counted.</summary>
    [Flag("--capacity-factor", "MoE: cap tokens per expert at C·tokens·K/E (default dropless)")]
    public double? CapacityFactor { get; init; }
    [Flag("--ep", "MoE: expert-parallel size (experts sharded over this many ranks inside the data-parallel group)")]
    public int Ep { get; init; } = 1;

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
        Optimizers.Parse(Optimizer);
        if (Zero is not (0 or 1)) throw new BadInputException($"--zero = {Zero}, expected 0 or 1");
        FaultPlan.Parse(Fault);
        if (Experts is { } ex) Positive("--experts", ex);
        if (ActiveExperts is { } k) Positive("--active-experts", k);
        if (MoeEvery is { } me) Positive("--moe-every", me);
        if (CapacityFactor is { } cf && !(cf > 0)) throw new BadInputException($"--capacity-factor = {cf}, expected a positive number (omit it for dropless routing)");
        if (AuxLossCoef < 0) throw new BadInputException($"--aux-loss-coef = {AuxLossCoef}, expected ≥ 0");
        if (ZLossCoef < 0) throw new BadInputException($"--z-loss-coef = {ZLossCoef}, expected ≥ 0");
        if (Ep < 1) throw new BadInputException($"--ep = {Ep}, expected a positive integer");
    }
}
