using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace Supercluster.Model;

// Llama (Touvron et al. 2023): RMSNorm, rotary position embeddings (Su et al. 2021), SwiGLU MLP (Shazeer 2020),
// grouped-query attention (Ainslie et al. 2023), no biases, untied output head. Names follow Hugging Face's Llama.

/// <summary>x / rms(x) · g (Zhang &amp; Sennrich 2019), computed in fp32.</summary>
public sealed class RmsNorm : Module<Tensor, Tensor>
{
    readonly Scalar _eps;   // made once: a Scalar per call would be freed only by the finalizer
    public readonly Parameter weight;

    public RmsNorm(long dim, double eps) : base(nameof(RmsNorm))
    {
        _eps = eps.ToScalar();
        weight = Parameter(ones(dim));
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        var xf = x.to(weight.dtype);
        return xf * rsqrt(xf.mul(xf).mean([-1L], keepdim: true).add_(_eps)) * weight;
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing) _eps.Dispose();
        base.Dispose(disposing);
    }
}

/// <summary>
/// Rotary embeddings: rotates pairs (x[i], x[i + hd/2]) of q and k by position-dependent angles. cos/sin of every
/// position up to the context are computed once per device and dtype (in fp64, then rounded) and shared by all layers.
/// </summary>
public sealed class Rotary(int headDim, int contextLength, double theta) : IDisposable
{
    readonly Dictionary<(string Device, ScalarType Dtype), (Tensor Cos, Tensor Sin)> _tables = new();

    (Tensor Cos, Tensor Sin) Table(Device device, ScalarType dtype)                                          // [ctx, hd] each
    {
        lock (_tables)
        {
            if (_tables.TryGetValue((device.ToString(), dtype), out var t)) return t;
            using var scope = NewDisposeScope();
            var invFreq = pow(theta, -arange(0, headDim, 2, dtype: ScalarType.Float64, device: device) / headDim);    // [hd/2]
            var angles = outer(arange(0, contextLength, dtype: ScalarType.Float64, device: device), invFreq);        // [ctx, hd/2]
            var full = cat([angles, angles], dim: 1);                                                               // [ctx, hd]
            t = (full.cos().to(dtype).DetachFromDisposeScope(), full.sin().to(dtype).DetachFromDisposeScope());
            _tables[(device.ToString(), dtype)] = t;
            return t;
        }
    }

    static Tensor RotateHalf(Tensor x)
    {
        long half = x.shape[3] / 2;
        return cat([-x.narrow(3, half, half), x.narrow(3, 0, half)], dim: 3);
    }

    /// <summary>x [B, H, T, hd] at positions [B or 1, T] (<see cref="KvCache.Positions"/>: in batched decoding each row continues its own sequence).</summary>
    public Tensor Apply(Tensor x, Tensor positions)
    {
        var (cos, sin) = Table(x.device, x.dtype);
        long b = positions.shape[0], t = positions.shape[1], hd = x.shape[3];
        var flat = positions.reshape(-1);
        return x * cos.index_select(0, flat).view(b, 1, t, hd) + RotateHalf(x) * sin.index_select(0, flat).view(b, 1, t, hd);
    }

    public void Dispose()
    {
        foreach (var (c, s) in _tables.Values) { c.Dispose(); s.Dispose(); }
        _tables.Clear();
    }
}

/// <summary>Grouped-query causal attention: n_kv_head key/value heads shared by n_head/n_kv_head query heads each.</summary>
public sealed class LlamaAttention : Module<Tensor, Tensor>
{
    readonly int _hd;
    readonly Rotary _rotary;
    public readonly Linear q_proj, k_proj, v_proj, o_proj;

    public LlamaAttention(Rotary rotary, ModelConfig c) : base(nameof(LlamaAttention))
    {
        _hd = c.HeadDim;
        _rotary = rotary;
        q_proj = Linear(c.NEmbd, c.NHead * c.HeadDim, hasBias: false);
        k_proj = Linear(c.NEmbd, c.NKvHead * c.HeadDim, hasBias: false);
        v_proj = Linear(c.NEmbd, c.NKvHead * c.HeadDim, hasBias: false);
        o_proj = Linear(c.NHead * c.HeadDim, c.NEmbd, hasBias: false);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => Forward(x, KvCache.None(x.device), 0);

    public Tensor Forward(Tensor x, KvCache cache, int layer)
    {
        long b = x.shape[0], t = x.shape[1], hd = _hd;
        var q = q_proj.call(x).view(b, t, -1, hd).transpose(1, 2);            // [B, H, T, hd] (a TP rank: its heads)
        var k = k_proj.call(x).view(b, t, -1, hd).transpose(1, 2);            // [B, H_kv, T, hd]
        var v = v_proj.call(x).view(b, t, -1, hd).transpose(1, 2);
        var pos = cache.Positions(t);                                                  // [B or 1, T]
        q = _rotary.Apply(q, pos);
        k = _rotary.Apply(k, pos);
        var att = cache.Attend(layer, q, k, v);                                        // [B, H, T, hd] over the cached and new keys
        var y = att.transpose(1, 2).contiguous().view(b, t, -1);
        return o_proj.call(y);
    }
}

/// <summary>SwiGLU feed-forward: down(silu(gate(x)) · up(x)).</summary>
public sealed class SwiGlu : Module<Tensor, Tensor>
{
    public readonly Linear gate_proj, up_proj, down_proj;

    public SwiGlu(ModelConfig c) : base(nameof(SwiGlu))
    {
        gate_proj = Linear(c.NEmbd, c.FfnHidden, hasBias: false);
        up_proj = Linear(c.NEmbd, c.FfnHidden, hasBias: false);
        down_proj = Linear(c.FfnHidden, c.NEmbd, hasBias: false);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) =>
        down_proj.call(functional.silu(gate_proj.call(x)) * up_proj.call(x));
}

/// <summary>Pre-RMSNorm residual block (a mixture of experts in place of the MLP in MoE blocks, as Mixtral).</summary>
public sealed class LlamaBlock : Module<Tensor, Tensor>
{
    public readonly RmsNorm input_layernorm, post_attention_layernorm;
    public readonly LlamaAttention self_attn;
    public readonly SwiGlu? mlp;
    public readonly MoE? block_sparse_moe;

    public LlamaBlock(Rotary rotary, ModelConfig c, int layer = 0, ExpertShard? shard = null) : base(nameof(LlamaBlock))
    {
        input_layernorm = new RmsNorm(c.NEmbd, c.NormEps);
        self_attn = new LlamaAttention(rotary, c);
        post_attention_layernorm = new RmsNorm(c.NEmbd, c.NormEps);
        if (c.IsMoeLayer(layer)) block_sparse_moe = new MoE(c, shard ?? ExpertShard.All);
        else mlp = new SwiGlu(c);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => Forward(x, KvCache.None(x.device), 0);

    public Tensor Forward(Tensor x, KvCache cache, int layer)
    {
        x = x + self_attn.Forward(input_layernorm.call(x), cache, layer);
        var h = post_attention_layernorm.call(x);
        return x + (mlp is not null ? mlp.forward(h) : block_sparse_moe!.forward(h));
    }
}

/// <summary>The Llama language model.</summary>
public sealed class Llama : CausalLM
{
    public readonly Embedding embed_tokens;
    public readonly ModuleList<LlamaBlock> layers;
    public readonly RmsNorm norm;
    public readonly Linear lm_head;
    readonly Rotary _rotary;   // a plain object: shared cos/sin tables, not a module (nothing to train or save)

    public Llama(ModelConfig c, ExpertShard? shard = null) : base(nameof(Llama), c)
    {
        _rotary = new Rotary(c.HeadDim, c.SeqLen, c.RopeTheta);
        embed_tokens = Embedding(c.PaddedVocab, c.NEmbd);
        layers = new ModuleList<LlamaBlock>(Enumerable.Range(0, c.NLayer).Select(i => new LlamaBlock(_rotary, c, i, shard)).ToArray());
        norm = new RmsNorm(c.NEmbd, c.NormEps);
        lm_head = nn.Linear(c.NEmbd, c.PaddedVocab, hasBias: false);
        RegisterComponents();
    }

    /// <summary>N(0, 0.02) weights, unit norms, residual projections scaled by 1/√(2·n_layer) (as GPT-2).</summary>
    protected override void Initialise()
    {
        double residualStd = 0.02 / Math.Sqrt(2 * Config.NLayer);
        foreach (var (name, p) in named_parameters())
        {
            if (MoE.IsExpertParameter(name)) continue;                                 // InitialiseExperts, below
            if (name.EndsWith("norm.weight") || name.EndsWith("layernorm.weight")) p.fill_(1.0);
            else if (name.EndsWith("o_proj.weight") || name.EndsWith("down_proj.weight")) init.normal_(p, 0, residualStd);
            else if (VocabTables.Contains(name)) InitVocabTable(p, 0.02);
            else init.normal_(p, 0, 0.02);
        }
        InitialiseExperts(0.02, residualStd);
    }

    public override Tensor Forward(Tensor idx, KvCache? cache)
    {
        cache ??= KvCache.None(idx.device);
        var x = Trunk(idx, cache);
        cache.Advance(idx.shape[1]);
        return RunUnit(["lm_head"], x, x => CutPadding(lm_head.forward(x)));        // [B, T, vocab]
    }

    public override Tensor Hidden(Tensor idx, KvCache? cache = null) => Trunk(idx, cache ?? KvCache.None(idx.device));

    Tensor Trunk(Tensor idx, KvCache cache)
    {
        if (cache.Length + idx.shape[1] > Config.SeqLen)
            throw new BadInputException($"sequence of {cache.Length + idx.shape[1]} tokens exceeds the model context {Config.SeqLen}");
        var x = RunUnit(["embed_tokens"], idx, idx => embed_tokens.call(idx));   // [B, T, d]
        for (int i = 0; i < layers.Count; i++) { int layer = i; x = RunUnit([$"layers.{i}"], x, x => layers[layer].Forward(x, cache, layer)); }
        return RunUnit(["norm"], x, x => norm.call(x));
    }

    public override Tensor EmbedTokens(Tensor idx, KvCache? cache = null)
    {
        if (idx.shape[1] > Config.SeqLen) throw new BadInputException($"sequence of {idx.shape[1]} tokens exceeds the model context {Config.SeqLen}");
        return embed_tokens.call(idx);                                             // [B, T, d]
    }

    public override Tensor RunBlocks(Tensor x, int from, int to, KvCache? cache = null)
    {
        cache ??= KvCache.None(x.device);
        for (int i = from; i < to; i++) x = layers[i].Forward(x, cache, i);
        return x;
    }

    public override Tensor NormAndHead(Tensor x) => CutPadding(lm_head.forward(FinalNorm(x)));

    public override Tensor FinalNorm(Tensor x) => norm.call(x);

    public override IReadOnlyList<string> EmbeddingParameters => ["embed_tokens.weight"];
    public override IReadOnlyList<string> HeadParameters => ["norm.weight", "lm_head.weight"];
    protected override string BlocksName => "layers";

    public override IReadOnlyList<string> VocabTables => ["embed_tokens.weight", "lm_head.weight"];

    protected override void Dispose(bool disposing)
    {
        if (disposing) _rotary.Dispose();
        base.Dispose(disposing);
    }

    public override IReadOnlyDictionary<string, (string HfName, bool Transposed)> HfNames =>
        named_parameters().ToDictionary(p => p.name, p => (p.name == "lm_head.weight" ? p.name : "model." + p.name, false));
}
