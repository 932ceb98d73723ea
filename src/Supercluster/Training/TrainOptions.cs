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
    [Flag("--eval-task", "Multiple-choice task JSONL (HellaSwag or {context, endings, label}; several: comma-separated) scored with each validation: acc, acc_norm to metrics.jsonl")]
    public string? EvalTask { get; init; }
    [Flag("--eval-task-limit", "Only the first N questions of each --eval-task file (0 = all)")]
    public int EvalTaskLimit { get; init; } = 0;
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
    [Flag("--init-from", "Start from a checkpoint: a run or checkpoint directory of this project (any family; the architecture comes from it, optimizer and step start fresh) or Hugging Face GPT-2 weights (model.safetensors)")]
    public string? InitFrom { get; init; }
    [Flag("--lora-rank", "LoRA rank r (0 = full fine-tuning); the base from --init-from is frozen and only the adapters train")]
    public int LoraRank { get; init; } = 0;
    [Flag("--lora-alpha", "LoRA α: the adapter update is scaled by α/r")]
    public double LoraAlpha { get; init; } = 16;
    [Flag("--lora-targets", "Projections LoRA adapts, comma-separated: q,k,v,o,up,down,gate (gpt2's q, k, v are one fused c_attn)")]
    public string LoraTargets { get; init; } = "q,k,v,o";
    [Flag("--lora-dropout", "Dropout on the adapters' input features (0 = off)")]
    public double LoraDropout { get; init; } = 0;
    [Flag("--fault", "Fault injection: kill:rank=R:step=S, hang:rank=R:step=S, crash-in-checkpoint:step=S")]
    public string? Fault { get; init; }
    /// <summary>Collectives: auto (single process alone, NCCL on GPUs, else MPI), mpi or nccl.</summary>
    [Flag("--backend", "Collectives: auto (NCCL on GPUs, else MPI; none for one rank), mpi or nccl")]
    public string Backend { get; init; } = "auto";
    /// <summary>0: replicated; 1: optimizer state sharded across data-parallel ranks; 2: and gradients; 3: and parameters (FSDP).</summary>
    [Flag("--zero", "ZeRO stage (Rajbhandari et al. 2020): 0 replicated, 1 shard optimizer state, 2 and gradients, 3 and parameters (FSDP)")]
    public int Zero { get; init; } = 0;
    /// <summary>Round the vocabulary tables up to a multiple of this; null: 128 on a GPU (tensor-core tiles), 1 on a CPU.</summary>
    [Flag("--pad-vocab", "Round the vocabulary tables up to a multiple of this (default 128 on a GPU, 1 on a CPU; results are the same)")]
    public int? PadVocab { get; init; }
    /// <summary>auto: the fused CUDA AdamW kernel when NVRTC is found and the parameters are on a GPU; torch: always torch ops.</summary>
    [Flag("--optimizer", "auto (AdamW; fused CUDA kernel compiled with NVRTC where available), torch, fused, or NAME[:auto|fused|torch] of a registered optimizer: adamw, lion (Chen et al. 2023; torch ops)")]
    public string Optimizer { get; init; } = "auto";
    /// <summary>Model-parallel layout, with plan's names and meaning; the rank grid orders TP innermost, then CP, DP, PP.</summary>
    [Flag("--tp", "Tensor-parallel size: layers and vocabulary split over this many neighbouring ranks (Megatron-LM)")]
    public int Tp { get; init; } = 1;
    [Flag("--cp", "Context-parallel size: each sequence split over this many ranks")]
    public int Cp { get; init; } = 1;
    [Flag("--pp", "Pipeline-parallel size: layers split into this many stages")]
    public int Pp { get; init; } = 1;
    [Flag("--interleave", "With --pp: virtual stages per rank (interleaved 1F1B, Narayanan et al. 2021 §2.2.2): rank r holds layer chunks r, r+pp, …; the bubble shrinks v-fold")]
    public int Interleave { get; init; } = 1;
    [Flag("--dp", "Data-parallel size (default world ÷ (tp × cp × pp))")]
    public int? Dp { get; init; }
    [Flag("--sequence-parallel", "With --tp: norms and residuals split along the sequence (all-gather / reduce-scatter instead of all-reduce)")]
    public bool SequenceParallel { get; init; }
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
        if (EvalTaskLimit < 0) throw new BadInputException($"--eval-task-limit = {EvalTaskLimit}, expected ≥ 0 (0 = all)");
        if (KeepCheckpoints <= 0) throw new BadInputException($"--keep-checkpoints = {KeepCheckpoints}, expected ≥ 1");
        if (!Directory.Exists(DataDir)) throw new BadInputException($"--data: directory '{DataDir}' does not exist (run prepare first)");
        if (PadVocab is <= 0) throw new BadInputException($"--pad-vocab = {PadVocab}, expected a positive multiple (1 = no padding)");
        Optimizers.Parse(Optimizer);
        if (Zero is not (0 or 1 or 2 or 3)) throw new BadInputException($"--zero = {Zero}, expected 0, 1, 2 or 3");
        FaultPlan.Parse(Fault);
        void AtLeastOne(string flag, int v) { if (v < 1) throw new BadInputException($"{flag} {v}: expected a positive integer"); }
        AtLeastOne("--tp", Tp); AtLeastOne("--cp", Cp); AtLeastOne("--pp", Pp); AtLeastOne("--interleave", Interleave);
        if (Dp is { } dp) AtLeastOne("--dp", dp);
        if (SequenceParallel && Tp == 1)
            throw new BadInputException("--sequence-parallel needs --tp > 1: it splits the regions between tensor-parallel layers over the TP ranks");
        if (LoraRank < 0) throw new BadInputException($"--lora-rank = {LoraRank}, expected ≥ 0 (0 = no LoRA)");
        if (LoraRank > 0)
        {
            if (InitFrom is null) throw new BadInputException("--lora-rank needs --init-from CHECKPOINT: LoRA adapts a trained base model");
            new FineTuning.LoraOptions(LoraRank, LoraAlpha, FineTuning.LoraOptions.ParseTargets(LoraTargets), LoraDropout).Validate();
        }
        if (Experts is { } ex) Positive("--experts", ex);
        if (ActiveExperts is { } k) Positive("--active-experts", k);
        if (MoeEvery is { } me) Positive("--moe-every", me);
        if (CapacityFactor is { } cf && !(cf > 0)) throw new BadInputException($"--capacity-factor = {cf}, expected a positive number (omit it for dropless routing)");
        if (AuxLossCoef < 0) throw new BadInputException($"--aux-loss-coef = {AuxLossCoef}, expected ≥ 0");
        if (ZLossCoef < 0) throw new BadInputException($"--z-loss-coef = {ZLossCoef}, expected ≥ 0");
        if (Ep < 1) throw new BadInputException($"--ep = {Ep}, expected a positive integer");
    }
}
