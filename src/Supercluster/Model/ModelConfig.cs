using System.Text.Json;
using System.Text.Json.Serialization;

namespace Supercluster.Model;

/// <summary>Architecture families: GPT-2 (Radford et al. 2019) and Llama (Touvron et al. 2023).</summary>
public enum ModelFamily { Gpt2, Llama }

/// <summary>
/// A model's architecture as data (stored in config.json of runs and checkpoints).
/// <c>NKvHead</c> &lt; <c>NHead</c> is grouped-query attention (Llama only).
/// </summary>
public sealed record ModelConfig
{
    [JsonConverter(typeof(JsonStringEnumConverter<ModelFamily>))]
    public ModelFamily Family { get; init; } = ModelFamily.Gpt2;
    public int VocabSize { get; init; } = 50257;
    public int SeqLen { get; init; } = 1024;   // context length (GPT-2's n_ctx / block_size)
    public int NLayer { get; init; } = 12;
    public int NHead { get; init; } = 12;
    public int NKvHead { get; init; } = 12;
    public int NEmbd { get; init; } = 768;
    public int FfnHidden { get; init; } = 3072;
    public double RopeTheta { get; init; } = 10000;
    public double NormEps { get; init; } = 1e-5;
    /// <summary>
    /// Embedding and output-head rows are allocated for <see cref="PaddedVocab"/> tokens, a multiple of this (64/128 keep
    /// the head's matmul on aligned tensor-core tiles; nanoGPT's 50257 → 50304). The extra rows stay zero and the logits
    /// are cut back to <see cref="VocabSize"/>, so padding changes speed, never results.
    /// </summary>
    public int PadVocabMultiple { get; init; } = 1;
    /// <summary>Experts per MoE block (1 = dense; absent in older config.json files). Each expert is an MLP of <see cref="FfnHidden"/>.</summary>
    public int Experts { get; init; } = 1;
    /// <summary>Experts each token is routed to (top-K).</summary>
    public int ActiveExperts { get; init; } = 1;
    /// <summary>Every N-th block (blocks N−1, 2N−1, … counted from 0) has a mixture of experts instead of its MLP.</summary>
    public int MoeEvery { get; init; } = 1;

    public int HeadDim => NEmbd / NHead;

    [JsonIgnore]
    public bool IsMoE => Experts > 1;

    /// <summary>Whether block <paramref name="layer"/> (0-based) is a mixture of experts.</summary>
    public bool IsMoeLayer(int layer) => IsMoE && (layer + 1) % MoeEvery == 0;

    /// <summary>Blocks with a mixture of experts.</summary>
    [JsonIgnore]
    public int MoeLayers => IsMoE ? NLayer / MoeEvery : 0;

    /// <summary>Rows of the vocabulary tables: <see cref="VocabSize"/> rounded up to <see cref="PadVocabMultiple"/>.</summary>
    [JsonIgnore]
    public int PaddedVocab => (int)((VocabSize + (long)PadVocabMultiple - 1) / PadVocabMultiple * PadVocabMultiple);

    /// <summary>Throws <see cref="BadInputException"/> naming the first field that is out of range.</summary>
    public ModelConfig Validate(string where = "model config")
    {
        void Positive(string field, long v) { if (v <= 0) throw new BadInputException($"{where}: {field} = {v}, expected a positive integer"); }
        Positive("vocab_size", VocabSize); Positive("seq_len", SeqLen); Positive("n_layer", NLayer);
        Positive("n_head", NHead); Positive("n_kv_head", NKvHead); Positive("n_embd", NEmbd); Positive("ffn_hidden", FfnHidden);
        Positive("pad_vocab_multiple", PadVocabMultiple);
        if (NEmbd % NHead != 0) throw new BadInputException($"{where}: n_embd = {NEmbd} is not divisible by n_head = {NHead}");
        if (NHead % NKvHead != 0) throw new BadInputException($"{where}: n_head = {NHead} is not divisible by n_kv_head = {NKvHead}");
        if (Family == ModelFamily.Gpt2 && NKvHead != NHead) throw new BadInputException($"{where}: gpt2 family needs n_kv_head = n_head ({NHead}), got {NKvHead}");
        if (Family == ModelFamily.Llama && HeadDim % 2 != 0) throw new BadInputException($"{where}: rotary embeddings need an even head dimension, got {HeadDim}");
        Positive("experts", Experts); Positive("active_experts", ActiveExperts); Positive("moe_every", MoeEvery);
        if (ActiveExperts > Experts) throw new BadInputException($"{where}: active_experts = {ActiveExperts} exceeds experts = {Experts}: expected K ≤ E");
        if (NormEps <= 0 || RopeTheta <= 0) throw new BadInputException($"{where}: norm_eps and rope_theta must be positive");
        return this;
    }

    /// <summary>Trainable parameters, counted from the shapes (tied GPT-2 head counted once; vocabulary padding, which never trains, not counted).</summary>
    public long ParameterCount() => CountParameters(Experts);

    /// <summary>Parameters one token passes through: the router and <see cref="ActiveExperts"/> experts of each MoE block (= <see cref="ParameterCount"/> when dense).</summary>
    public long ActiveParameterCount() => CountParameters(ActiveExperts);

    long CountParameters(int experts)
    {
        long d = NEmbd, f = FfnHidden, v = VocabSize, kv = (long)NKvHead * HeadDim;
        long dense = NLayer - MoeLayers, router = d * Experts;
        if (Family == ModelFamily.Gpt2)
        {
            long mlp = (d * f + f) + (f * d + d);
            long block = 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + 2 * d;
            return v * d + (long)SeqLen * d + NLayer * block + dense * mlp + MoeLayers * (router + experts * mlp) + 2 * d;
        }
        long attn = d * d + 2 * d * kv + d * d;
        long llamaBlock = d + attn + d;
        long swiglu = 3 * d * f;
        return v * d + NLayer * llamaBlock + dense * swiglu + MoeLayers * (router + experts * swiglu) + d + v * d;
    }

    /// <summary>Parameters that multiply activations (excludes position embeddings, norms; includes the output head once).</summary>
    public long NonEmbeddingParameterCount() =>
        ParameterCount() - (Family == ModelFamily.Gpt2 ? (long)SeqLen * NEmbd : (long)VocabSize * NEmbd);

    public static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        WriteIndented = true,
        UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
    };

    public string ToJson() => JsonSerializer.Serialize(this, Json);

    /// <summary>Reads and validates a config; errors name the file.</summary>
    public static ModelConfig FromJson(string json, string where)
    {
        try
        {
            var c = JsonSerializer.Deserialize<ModelConfig>(json, Json) ?? throw new BadInputException($"{where}: empty model config");
            return c.Validate(where);
        }
        catch (JsonException e)
        {
            throw new BadInputException($"{where}: invalid model config: {e.Message}");
        }
    }
}
