namespace Supercluster.Model;

/// <summary>Named architectures. GPT-2 sizes follow Radford et al. 2019 (and HF's gpt2* configs); the small ones fit a CPU.</summary>
public static class ModelPresets
{
    static ModelConfig Gpt2(int layers, int heads, int embd, int ctx = 1024) => new()
    {
        Family = ModelFamily.Gpt2, VocabSize = 50257, SeqLen = ctx, NLayer = layers, NHead = heads, NKvHead = heads,
        NEmbd = embd, FfnHidden = 4 * embd,
    };

    static ModelConfig Llama(int layers, int heads, int kvHeads, int embd, int ffn, int ctx) => new()
    {
        Family = ModelFamily.Llama, VocabSize = 50257, SeqLen = ctx, NLayer = layers, NHead = heads, NKvHead = kvHeads,
        NEmbd = embd, FfnHidden = ffn, RopeTheta = 10000, NormEps = 1e-5,
    };

    public static readonly IReadOnlyDictionary<string, ModelConfig> All = new Dictionary<string, ModelConfig>
    {
        ["tiny"] = Gpt2(2, 2, 64, 64),              // tests: seconds on a CPU
        ["small"] = Gpt2(4, 4, 128, 128),           // the demo: learns the SOTU corpus in minutes on 2 cores
        ["gpt2"] = Gpt2(12, 12, 768),               // 124M
        ["gpt2-medium"] = Gpt2(24, 16, 1024),       // 350M
        ["gpt2-large"] = Gpt2(36, 20, 1280),        // 774M
        ["gpt2-xl"] = Gpt2(48, 25, 1600),           // 1.5B
        ["llama-tiny"] = Llama(2, 4, 2, 64, 172, 64),
        ["llama-small"] = Llama(4, 8, 2, 128, 344, 128),
        ["llama-110m"] = Llama(12, 12, 4, 768, 2048, 1024),
        // Mixture of experts: 8 experts, top-2, grouped-query attention; each expert is half llama-tiny's MLP (86 = 172/2),
        // so the active parameters equal llama-tiny's plus the router (the dense baseline of bench).
        ["moe-tiny"] = Llama(2, 4, 2, 64, 86, 64) with { Experts = 8, ActiveExperts = 2 },
        ["grok1-mini"] = GrokMini(),
    };

    /// <summary>
    /// Grok-1's shape ratios (plan's grok1-314b) at CPU size: 6 query heads per key/value head, expert width 16/3 of the
    /// model width, 8 experts with 2 active, every block MoE; head dimension 32 instead of 128, 4 layers, context 256.
    /// SwiGLU experts stand in for Grok's gated GELU.
    /// </summary>
    static ModelConfig GrokMini()
    {
        var g = Planning.ModelCatalog.Get("grok1-314b");
        int kv = 1, heads = kv * g.Heads / g.KvHeads, d = heads * 32;
        return Llama(4, heads, kv, d, (int)((long)d * g.Ffn / g.Hidden), 256) with { Experts = g.Experts, ActiveExperts = g.ActiveExperts, MoeEvery = g.MoeEvery };
    }

    public static ModelConfig Get(string name) =>
        All.TryGetValue(name, out var c) ? c
        : throw new BadInputException($"--model: unknown preset '{name}', expected one of {string.Join(", ", All.Keys)}");
}
