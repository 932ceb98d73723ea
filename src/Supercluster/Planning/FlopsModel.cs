using Supercluster.Model;

namespace Supercluster.Planning;

/// <summary>
/// Training FLOPs. A matmul of an m×k by k×n costs 2mkn; training is forward (1×) + backward (2×) = 3× forward
/// (Kaplan et al. 2020, §2.1: C ≈ 6N per token). Attention adds QKᵀ and A·V: 2·s·h each per token per layer forward,
/// i.e. 12·L·s·h per token for training, counted without causal halving as in PaLM (Chowdhery et al. 2022, App. B)
/// and Megatron-LM (Narayanan et al. 2021, eq. 3: 72·B·s·L·h²·(1 + s/6h + V/12hL) for a ffn=4h MHA model).
/// </summary>
public static class FlopsModel
{
    /// <summary>Kaplan's approximation: 6 × active non-embedding parameters (GPT-3's 3.14e23 uses 6·N·D).</summary>
    public static double KaplanFlopsPerToken(ModelSpec m) => 6.0 * m.ActiveNonEmbeddingParams;

    /// <summary>Attention score and value FLOPs per token for training: 12·L·s·h.</summary>
    public static double AttentionFlopsPerToken(ModelSpec m, int seqLen) => 12.0 * m.Layers * seqLen * m.Hidden;

    /// <summary>Output (logit) projection per token for training: 6·h·V (the input embedding is a lookup).</summary>
    public static double LogitFlopsPerToken(ModelSpec m) => 6.0 * m.Hidden * m.Vocab;

    /// <summary>Model FLOPs per token (the numerator of MFU): 6N + 12·L·s·h + 6·h·V.</summary>
    public static double ModelFlopsPerToken(ModelSpec m, int seqLen) =>
        KaplanFlopsPerToken(m) + AttentionFlopsPerToken(m, seqLen) + LogitFlopsPerToken(m);

    /// <summary>
    /// FLOPs the hardware actually executes: full recomputation repeats the layers' forward (+1/3 of 6N + attention,
    /// Narayanan et al. 2021 use 96 instead of 72); selective recomputation repeats only the attention scores and values
    /// (Korthikanti et al. 2022, §5: +4·L·s·h per token).
    /// </summary>
    public static double HardwareFlopsPerToken(ModelSpec m, int seqLen, Recompute r) => ModelFlopsPerToken(m, seqLen) + r switch
    {
        Recompute.Full => (KaplanFlopsPerToken(m) + AttentionFlopsPerToken(m, seqLen)) / 3.0,
        Recompute.Selective => AttentionFlopsPerToken(m, seqLen) / 3.0,
        _ => 0,
    };

    /// <summary>A trainable model's shape for these formulas (the real vocabulary: padding rows are not useful work).</summary>
    public static ModelSpec Spec(ModelConfig c) => new(c.Family.ToString().ToLowerInvariant(), c.NLayer, c.NEmbd, c.NHead, c.NKvHead,
        c.FfnHidden, c.VocabSize, Experts: c.Experts, ActiveExperts: c.ActiveExperts, GatedFfn: c.Family == ModelFamily.Llama,
        TiedEmbeddings: c.Family == ModelFamily.Gpt2, DefaultSeqLen: c.SeqLen) { MoeEvery = c.MoeEvery };

    /// <summary>Model FLOPs per token of a model trained at <paramref name="seqLen"/>: the MFU numerator of train and bench, as plan's.</summary>
    public static double ModelFlopsPerToken(ModelConfig c, int seqLen) => ModelFlopsPerToken(Spec(c), seqLen);
}
