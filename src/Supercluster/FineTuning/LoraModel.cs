using Supercluster.Model;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace Supercluster.FineTuning;

/// <summary>One adapted projection W [out, in]: W' = W + (α/r)·B·A, A [r, in], B [out, r] (Hu et al. 2021).</summary>
public sealed class LoraAdapter : Module
{
    public readonly Parameter lora_A, lora_B;

    public LoraAdapter(string path, long inFeatures, long outFeatures, int rank) : base(nameof(LoraAdapter))
    {
        Path = path;
        // A as nn.Linear's default (kaiming-uniform, a = √5: U(±1/√in)), B = 0: the adapted model starts as the base (PEFT's init).
        double bound = 1 / Math.Sqrt(inFeatures);
        lora_A = Parameter(empty(rank, inFeatures).uniform_(-bound, bound));
        lora_B = Parameter(zeros(outFeatures, rank));
        RegisterComponents();
    }

    /// <summary>The adapted module's path in the base model, e.g. layers.0.self_attn.q_proj.</summary>
    public string Path { get; }

    /// <summary>(α/r)·B·A [out, in]; with dropout p in training, on A's input features (1/(1-p)-scaled), one mask per forward.</summary>
    public Tensor Delta(double scale, double dropout, bool training)
    {
        var a = lora_A;
        if (training && dropout > 0)
            return lora_B.matmul(a * functional.dropout(ones(a.shape[1], dtype: a.dtype, device: a.device), dropout, training: true)).mul(scale);
        return lora_B.matmul(a).mul(scale);
    }
}

/// <summary>
/// A base model with LoRA adapters on some of its projections, composed around it: the base is frozen
/// (<c>requires_grad = false</c>, so it has no gradients and no optimizer state) and unchanged; the adapters are the
/// only trainable parameters. Each forward puts W + (α/r)·B·A in place of each adapted weight and the base weight back
/// afterwards (a reparametrization, as torch.nn.utils.parametrize and minLoRA do), so the model's code is untouched and
/// autograd carries the gradient of W' to A and B alone. Dropout (<see cref="LoraOptions.Dropout"/>) therefore drops
/// input features of the adapter for a whole forward rather than per token as PEFT does.
/// </summary>
public sealed class LoraModel : CausalLM
{
    public readonly CausalLM base_model;
    public readonly ModuleList<LoraAdapter> adapters;
    readonly Dictionary<string, Linear> _targets;

    public LoraModel(CausalLM baseModel, LoraOptions options, long seed) : base(nameof(LoraModel), baseModel.Config)
    {
        options.Validate();
        Options = options;
        base_model = baseModel;
        foreach (var p in baseModel.parameters()) p.requires_grad = false;
        var modules = baseModel.named_modules().ToDictionary(m => m.name, m => m.module);
        _targets = options.ModulePaths(baseModel.Config).ToDictionary(p => p, p => modules.GetValueOrDefault(p) as Linear
            ?? throw new InvalidOperationException($"{p} is not a linear projection of the {baseModel.Config.Family} model"));
        torch.manual_seed(seed);
        adapters = new ModuleList<LoraAdapter>(_targets.Select(t => new LoraAdapter(t.Key, t.Value.in_features, t.Value.out_features, options.Rank)).ToArray());
        adapters.to(baseModel.parameters().First().device);
        RegisterComponents();
    }

    public LoraOptions Options { get; }

    public override Tensor Forward(Tensor idx, KvCache? cache)
    {
        using var _ = Adapt();
        return base_model.Forward(idx, cache);
    }

    public override Tensor Hidden(Tensor idx, KvCache? cache = null)
    {
        using var _ = Adapt();
        return base_model.Hidden(idx, cache);
    }

    // The pipeline seams delegate to the base model (a LoRA run is refused with --pp: this keeps the surface whole).
    public override Tensor EmbedTokens(Tensor idx, KvCache? cache = null) { using var _ = Adapt(); return base_model.EmbedTokens(idx, cache); }
    public override Tensor RunBlocks(Tensor x, int from, int to, KvCache? cache = null) { using var _ = Adapt(); return base_model.RunBlocks(x, from, to, cache); }
    public override Tensor NormAndHead(Tensor x) { using var _ = Adapt(); return base_model.NormAndHead(x); }
    public override Tensor FinalNorm(Tensor x) => base_model.FinalNorm(x);
    public override IReadOnlyList<string> EmbeddingParameters => [.. base_model.EmbeddingParameters.Select(n => "base_model." + n)];
    public override IReadOnlyList<string> HeadParameters => [.. base_model.HeadParameters.Select(n => "base_model." + n)];
    protected override string BlocksName => Config.Family == ModelFamily.Gpt2 ? "base_model.h" : "base_model.layers";

    /// <summary>The merged weight W + (α/r)·B·A of every adapted projection (no graph), by module path.</summary>
    public Dictionary<string, Tensor> MergedWeights()
    {
        using var _ = no_grad();
        return adapters.ToDictionary(a => a.Path, a => _targets[a.Path].weight!.detach().add(a.Delta(Options.Scale, 0, false).to(_targets[a.Path].weight!.dtype)));
    }

    /// <summary>
    /// Puts W' = W + ΔW into every adapted projection until disposed. Linear's weight setter disposes the tensor it
    /// replaces, so the base weight is held by a second handle and put back as a fresh frozen parameter.
    /// </summary>
    IDisposable Adapt()
    {
        var bases = new List<(Linear Layer, Tensor W)>(adapters.Count);
        try
        {
            foreach (var a in adapters)
            {
                var layer = _targets[a.Path];
                var w = layer.weight!.detach();                                                   // [out, in], frozen
                bases.Add((layer, w));
                layer.weight = new Parameter(w + a.Delta(Options.Scale, Options.Dropout, training).to(w.dtype));
            }
        }
        catch { Restore(bases); throw; }
        return new Restorer(() => Restore(bases));
    }

    static void Restore(List<(Linear Layer, Tensor W)> bases)
    {
        foreach (var (layer, w) in bases)
        {
            var p = new Parameter(w, requires_grad: false);
            p.DetachFromDisposeScope();   // the module owns it past the step's dispose scope
            layer.weight = p;
        }
    }

    sealed class Restorer(Action restore) : IDisposable
    {
        public void Dispose() => restore();
    }

    protected override void Initialise() { }

    public override IReadOnlyList<string> VocabTables => base_model.VocabTables.Select(n => "base_model." + n).ToList();

    public override IReadOnlyDictionary<string, (string HfName, bool Transposed)> HfNames =>
        base_model.HfNames.ToDictionary(kv => "base_model." + kv.Key, kv => kv.Value);
}
