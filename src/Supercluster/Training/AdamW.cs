using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Supercluster.Training;

/// <summary>
/// AdamW (Loshchilov &amp; Hutter 2019) with decoupled weight decay applied only to matrices (dim ≥ 2), as in GPT-2/3 training.
/// Written out (not torch.optim) so its state is plain named tensors: checkpointed exactly, and shardable later.
/// Same arithmetic as torch.optim.AdamW.
/// </summary>
public sealed class AdamW : IDisposable
{
    readonly List<(string Name, Parameter P, bool Decay, Tensor M, Tensor V)> _groups = [];

    public AdamW(IEnumerable<(string Name, Parameter P)> parameters, double beta1 = 0.9, double beta2 = 0.95, double eps = 1e-8, double weightDecay = 0.1)
    {
        Beta1 = beta1; Beta2 = beta2; Eps = eps; WeightDecay = weightDecay;
        foreach (var (name, p) in parameters)
            _groups.Add((name, p, p.dim() >= 2, zeros_like(p).DetachFromDisposeScope(), zeros_like(p).DetachFromDisposeScope()));
    }

    public double Beta1 { get; }
    public double Beta2 { get; }
    public double Eps { get; }
    public double WeightDecay { get; }
    /// <summary>Updates taken so far (for bias correction).</summary>
    public long StepCount { get; private set; }

    public void Step(double lr)
    {
        StepCount++;
        double bc1 = 1 - Math.Pow(Beta1, StepCount), bc2 = 1 - Math.Pow(Beta2, StepCount);
        using var _ = no_grad();
        foreach (var (_, p, decay, m, v) in _groups)
        {
            var g = p.grad;
            if (g is null) continue;
            if (decay && WeightDecay != 0) p.mul_(1 - lr * WeightDecay);
            m.mul_(Beta1).add_(g, alpha: 1 - Beta1);
            v.mul_(Beta2).addcmul_(g, g, value: 1 - Beta2);
            using var denom = (v.sqrt() / Math.Sqrt(bc2)).add_(Eps);
            p.addcdiv_(m, denom, value: -lr / bc1);
        }
    }

    public void ZeroGrad()
    {
        foreach (var (_, p, _, _, _) in _groups) p.grad?.zero_();
    }

    /// <summary>State as named tensors (views, not copies): <c>exp_avg.NAME</c>, <c>exp_avg_sq.NAME</c>.</summary>
    public IEnumerable<(string Name, Tensor Tensor)> State() =>
        _groups.SelectMany(g => new[] { ("exp_avg." + g.Name, g.M), ("exp_avg_sq." + g.Name, g.V) });

    public void LoadState(IReadOnlyDictionary<string, Tensor> state, long stepCount, string where)
    {
        using var _ = no_grad();
        foreach (var (name, p, _, m, v) in _groups)
        {
            foreach (var (key, dst) in new[] { ("exp_avg." + name, m), ("exp_avg_sq." + name, v) })
            {
                if (!state.TryGetValue(key, out var src)) throw new BadInputException($"{where}: optimizer state has no {key}");
                if (!src.shape.SequenceEqual(dst.shape)) throw new BadInputException($"{where}: optimizer state {key} has shape [{string.Join(", ", src.shape)}], model needs [{string.Join(", ", dst.shape)}]");
                dst.copy_(src);
            }
        }
        StepCount = stepCount;
    }

    public void Dispose()
    {
        foreach (var g in _groups) { g.M.Dispose(); g.V.Dispose(); }
    }
}
