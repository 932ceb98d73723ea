using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace Supercluster.Model;

// GPT-2 (Radford et al. 2019) as in nanoGPT's model.py: learned positions, pre-LayerNorm blocks,
// GELU(tanh) MLP, weight-tied output head. Module names follow Hugging Face's GPT-2 so checkpoints map 1:1.

/// <summary>Multi-head causal self-attention: one fused q/k/v projection, flash/SDPA attention, output projection.</summary>
public sealed class CausalSelfAttention : Module<Tensor, Tensor>
{
    readonly int _nHead;
    public readonly Linear c_attn, c_proj;

    public CausalSelfAttention(ModelConfig c) : base(nameof(CausalSelfAttention))
    {
        _nHead = c.NHead;
        c_attn = Linear(c.NEmbd, 3 * c.NEmbd);
        c_proj = Linear(c.NEmbd, c.NEmbd);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => Forward(x, KvCache.None(x.device), 0);

    public Tensor Forward(Tensor x, KvCache cache, int layer)
    {
        long hd = x.shape[2] / _nHead;
        var qkv = cache.Project(c_attn, x);                                    // [B, T, 3·d] (a TP rank: its heads' q, k, v)
        return cache.Project(c_proj, cache.AttendPacked(layer, qkv, hd));     // split into heads, attended, re-assembled: [B, T, d]
    }
}

/// <summary>Position-wise feed-forward: d → 4d → d with GELU (tanh approximation, as GPT-2 used).</summary>
public sealed class Mlp : Module<Tensor, Tensor>
{
    public readonly Linear c_fc, c_proj;

    public Mlp(ModelConfig c) : base(nameof(Mlp))
    {
        c_fc = Linear(c.NEmbd, c.FfnHidden);
        c_proj = Linear(c.FfnHidden, c.NEmbd);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => Forward(x, KvCache.None(x.device));

    public Tensor Forward(Tensor x, KvCache cache) =>
        cache.Project(c_proj, functional.gelu(cache.Project(c_fc, x), TorchSharp.Modules.GELU.Approximate.tanh));
}

/// <summary>Pre-norm residual block: x + attn(ln(x)), then x + mlp(ln(x)) (a mixture of experts in MoE blocks).</summary>
public sealed class Block : Module<Tensor, Tensor>
{
    public readonly LayerNorm ln_1, ln_2;
    public readonly CausalSelfAttention attn;
    public readonly Mlp? mlp;
    public readonly MoE? block_sparse_moe;

    public Block(ModelConfig c, int layer = 0, ExpertShard? shard = null) : base(nameof(Block))
    {
        ln_1 = LayerNorm(c.NEmbd, c.NormEps);
        attn = new CausalSelfAttention(c);
        ln_2 = LayerNorm(c.NEmbd, c.NormEps);
        if (c.IsMoeLayer(layer)) block_sparse_moe = new MoE(c, shard ?? ExpertShard.All);
        else mlp = new Mlp(c);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => Forward(x, KvCache.None(x.device), 0);

    public Tensor Forward(Tensor x, KvCache cache, int layer)
    {
        x = x + attn.Forward(ln_1.call(x), cache, layer);
        var h = ln_2.call(x);
        return x + (mlp is not null ? mlp.Forward(h, cache) : block_sparse_moe!.forward(h));
    }
}

/// <summary>The GPT-2 language model.</summary>
public sealed class Gpt2 : CausalLM
{
    public readonly Embedding wte, wpe;
    public readonly ModuleList<Block> h;
    public readonly LayerNorm ln_f;

    public Gpt2(ModelConfig c, ExpertShard? shard = null) : base(nameof(Gpt2), c)
    {
        wte = Embedding(c.PaddedVocab, c.NEmbd); // also the output head (weight tying)
        wpe = Embedding(c.SeqLen, c.NEmbd);
        h = new ModuleList<Block>(Enumerable.Range(0, c.NLayer).Select(i => new Block(c, i, shard)).ToArray());
        ln_f = LayerNorm(c.NEmbd, c.NormEps);
        RegisterComponents();
    }

    /// <summary>GPT-2 init: N(0, 0.02) weights, zero biases, residual projections scaled by 1/√(2·n_layer).</summary>
    protected override void Initialise()
    {
        double residualStd = 0.02 / Math.Sqrt(2 * Config.NLayer);
        foreach (var (name, p) in named_parameters())
        {
            if (MoE.IsExpertParameter(name)) continue;                         // InitialiseExperts, below
            if (name.EndsWith(".bias")) p.zero_();
            else if (name.Contains("ln_")) p.fill_(1.0);
            else if (name.EndsWith("c_proj.weight")) init.normal_(p, 0, residualStd);
            else if (name == "wte.weight") InitVocabTable(p, 0.02);
            else init.normal_(p, 0, 0.02);
        }
        InitialiseExperts(0.02, residualStd);
    }

    public override Tensor Forward(Tensor idx, KvCache? cache)
    {
        cache ??= KvCache.None(idx.device);
        if (cache.WholeForward(idx) is { } logits) return logits;
        var x = RunUnit(["wte", "wpe"], idx, idx => Embed(idx, cache));
        for (int i = 0; i < h.Count; i++) { int layer = i; x = RunUnit([$"h.{i}"], x, x => h[layer].Forward(x, cache, layer)); }
        cache.Advance(idx.shape[1]);
        return RunUnit(["ln_f", "wte"], x, x => Head(ln_f.forward(x)));      // [B, T, vocab]
    }

    public override Tensor Hidden(Tensor idx, KvCache? cache = null)
    {
        cache ??= KvCache.None(idx.device);
        var x = Embed(idx, cache);
        for (int i = 0; i < h.Count; i++) x = h[i].Forward(x, cache, i);
        return ln_f.forward(x);
    }

    public override Tensor EmbedTokens(Tensor idx, KvCache? cache = null) => Embed(idx, cache ?? KvCache.None(idx.device));

    public override Tensor RunBlocks(Tensor x, int from, int to, KvCache? cache = null)
    {
        cache ??= KvCache.None(x.device);
        for (int i = from; i < to; i++) x = h[i].Forward(x, cache, i);
        return x;
    }

    public override Tensor NormAndHead(Tensor x) => Head(FinalNorm(x));

    public override Tensor FinalNorm(Tensor x) => ln_f.forward(x);

    public override IReadOnlyList<string> EmbeddingParameters => ["wte.weight", "wpe.weight"];
    public override IReadOnlyList<string> HeadParameters => ["ln_f.weight", "ln_f.bias", "wte.weight"];   // wte: the tied head
    protected override string BlocksName => "h";

    Tensor Embed(Tensor idx, KvCache cache)
    {
        long t = idx.shape[1];
        if (cache.Length + t > Config.SeqLen)
            throw new BadInputException($"sequence of {cache.Length + t} tokens exceeds the model context {Config.SeqLen}");
        return wte.call(idx) + wpe.call(cache.Positions(t));            // [B, T, d] + [B or 1, T, d]
    }

    Tensor Head(Tensor x) => CutPadding(functional.linear(x, wte.weight!));    // [B, T, padded] → [B, T, vocab]

    public override IReadOnlyList<string> VocabTables => ["wte.weight"];

    public override IReadOnlyDictionary<string, (string HfName, bool Transposed)> HfNames =>
        named_parameters().ToDictionary(p => p.name, p => (p.name,
            // HF stores these as Conv1D weights, [in, out]: the transpose of nn.Linear's [out, in].
            p.name.EndsWith(".weight") && (p.name.Contains(".c_attn.") || p.name.Contains(".c_proj.") || p.name.Contains(".c_fc."))));
}
