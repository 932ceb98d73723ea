using static TorchSharp.torch;

namespace Supercluster.Training;

/// <summary>
/// AdamW (Loshchilov &amp; Hutter 2019) on one flat fp32 buffer of parameters (or a ZeRO shard of it): a handful of
/// large element-wise ops per step. Weight decay is decoupled and applied where <c>decayMask</c> is 1 (matrices,
/// as in GPT-2/3 training). Same arithmetic as torch.optim.AdamW.
/// </summary>
public sealed class AdamW : IDisposable
{
    readonly Tensor _m, _v, _decayMask;

    /// <param name="decayMask">1 where weight decay applies, 0 elsewhere; its length is the buffer's.</param>
    public AdamW(Tensor decayMask, double beta1 = 0.9, double beta2 = 0.95, double eps = 1e-8, double weightDecay = 0.1)
    {
        Beta1 = beta1; Beta2 = beta2; Eps = eps; WeightDecay = weightDecay;
        _decayMask = decayMask.detach().clone().DetachFromDisposeScope();
        _m = zeros_like(_decayMask).DetachFromDisposeScope();
        _v = zeros_like(_decayMask).DetachFromDisposeScope();
    }

    public double Beta1 { get; }
    public double Beta2 { get; }
    public double Eps { get; }
    public double WeightDecay { get; }
    /// <summary>Updates taken so far (for bias correction).</summary>
    public long StepCount { get; private set; }
    public long Length => _m.numel();

    /// <summary>Updates <paramref name="param"/> in place from <paramref name="grad"/> (both flat, this optimizer's length).</summary>
    public void Step(Tensor param, Tensor grad, double lr)
    {
        StepCount++;
        double bc1 = 1 - Math.Pow(Beta1, StepCount), bc2 = 1 - Math.Pow(Beta2, StepCount);
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        if (WeightDecay != 0) param.mul_(1 - _decayMask * (lr * WeightDecay));
        _m.mul_(Beta1).add_(grad, alpha: 1 - Beta1);
        _v.mul_(Beta2).addcmul_(grad, grad, value: 1 - Beta2);
        var denom = (_v.sqrt() / Math.Sqrt(bc2)).add_(Eps);
        param.addcdiv_(_m, denom, value: -lr / bc1);
    }

    /// <summary>First and second moments (views, not copies).</summary>
    public (Tensor ExpAvg, Tensor ExpAvgSq) State => (_m, _v);

    public void LoadState(Tensor expAvg, Tensor expAvgSq, long stepCount)
    {
        using var _ = no_grad();
        _m.copy_(expAvg);
        _v.copy_(expAvgSq);
        StepCount = stepCount;
    }

    public void Dispose()
    {
        _m.Dispose(); _v.Dispose(); _decayMask.Dispose();
    }
}
