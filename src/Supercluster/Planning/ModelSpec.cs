namespace Supercluster.Planning;

/// <summary>
/// Shape of a decoder-only transformer, enough to count parameters, FLOPs and activation memory.
/// Parameter counts follow the usual layout (Kaplan et al. 2020 §2.1; Narayanan et al. 2021 §5.1):
/// attention Q,O are h×h, K,V are h×(kvHeads·headDim) (grouped-query attention, Ainslie et al. 2023);
/// the MLP has 2 matrices h×ffn, or 3 when gated (SwiGLU, Shazeer 2020, as in Llama);
/// a mixture of experts (Fedus et al. 2022, Switch; Jiang et al. 2024, Mixtral) has <see cref="Experts"/> MLPs per layer,
/// <see cref="ActiveExperts"/> of which each token uses, plus an h×experts router.
/// Norm weights and biases (≈0.01%) are ignored.
/// </summary>
public sealed record ModelSpec(
    string Name,
    int Layers,
    int Hidden,
    int Heads,
    int KvHeads,
    int Ffn,
    int Vocab,
    int Experts = 1,
    int ActiveExperts = 1,
    bool GatedFfn = false,
    bool TiedEmbeddings = false,
    int DefaultSeqLen = 2048)
{
    /// <summary>Every N-th layer is a mixture of experts (the others have one MLP of <see cref="Ffn"/>); 1: all (Grok-1, Mixtral).</summary>
    public int MoeEvery { get; init; } = 1;
    bool? gptStyle;
    /// <summary>GPT-2/3-style layers (Megatron-LM's GPT): biases on every linear, hidden dropout, LayerNorm, learned positions
    /// (<see cref="ComputeModel.GptLayerExtraBytesPerToken"/>). False: no biases, no dropout, rotary on q and k (Llama; Nemotron-4,
    /// whose MLP is ungated squared ReLU). Unset: GPT-style unless the MLP is gated.</summary>
    public bool GptStyle { get => gptStyle ?? !GatedFfn; init => gptStyle = value; }

    /// <summary>Layers with a mixture of experts.</summary>
    public int MoeLayers => IsMoE ? Layers / MoeEvery : 0;

    public int HeadDim => Hidden / Heads;
    public long KvDim => (long)KvHeads * HeadDim;
    public bool IsMoE => Experts > 1;

    public long AttentionParamsPerLayer => 2L * Hidden * Hidden + 2L * Hidden * KvDim;
    public long FfnParamsPerExpert => (GatedFfn ? 3L : 2L) * Hidden * Ffn;
    public long RouterParamsPerLayer => IsMoE ? (long)Hidden * Experts : 0;

    /// <summary>Parameters every rank of a layer holds (attention + router): split by tensor parallelism only.</summary>
    public long DenseParamsPerLayer => AttentionParamsPerLayer + RouterParamsPerLayer;
    /// <summary>MLP parameters of a layer (all experts): split by tensor and expert parallelism.</summary>
    public long ExpertParamsPerLayer => Experts * FfnParamsPerExpert;

    /// <summary>Input embedding plus output projection (one matrix if tied).</summary>
    public long EmbeddingParams => (TiedEmbeddings ? 1L : 2L) * Vocab * Hidden;

    public long TotalParams => (long)Layers * AttentionParamsPerLayer + MoeLayers * (RouterParamsPerLayer + ExpertParamsPerLayer)
        + (long)(Layers - MoeLayers) * FfnParamsPerExpert + EmbeddingParams;
    /// <summary>Parameters a token passes through, excluding the input embedding lookup (Kaplan's N).</summary>
    public long ActiveNonEmbeddingParams => (long)Layers * AttentionParamsPerLayer + MoeLayers * (RouterParamsPerLayer + ActiveExperts * FfnParamsPerExpert)
        + (long)(Layers - MoeLayers) * FfnParamsPerExpert;
    public long ActiveParams => ActiveNonEmbeddingParams + EmbeddingParams;

    /// <summary>Throws <see cref="BadInputException"/> naming the first field that makes no sense.</summary>
    public void Validate()
    {
        Positive(Layers, "--layers"); Positive(Hidden, "--hidden"); Positive(Heads, "--heads"); Positive(KvHeads, "--kv-heads");
        Positive(Ffn, "--ffn"); Positive(Vocab, "--vocab"); Positive(Experts, "--experts"); Positive(ActiveExperts, "--active-experts");
        if (Hidden % Heads != 0) throw new BadInputException($"--hidden {Hidden} is not divisible by --heads {Heads}: expected hidden = heads × head dim");
        if (Heads % KvHeads != 0) throw new BadInputException($"--kv-heads {KvHeads} does not divide --heads {Heads}: expected a divisor (grouped-query attention)");
        Positive(MoeEvery, "--moe-every");
        if (ActiveExperts > Experts) throw new BadInputException($"--active-experts {ActiveExperts} exceeds --experts {Experts}");
    }

    static void Positive(long v, string name)
    {
        if (v <= 0) throw new BadInputException($"{name} {v} must be a positive integer");
    }
}
