using TorchSharp;
using static TorchSharp.torch;

namespace Supercluster.Training;

/// <summary>
/// Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms", Algorithm 2): the update is the sign of an
/// interpolation of momentum and gradient, so every element moves by exactly lr (plus decoupled weight decay); one
/// state tensor instead of AdamW's two. Typical settings: lr 3–10× smaller than AdamW's, weight decay 3–10× larger.
/// Torch ops only. This file and one line in <see cref="Optimizers"/> are all an optimizer takes.
/// </summary>
public sealed class Lion : IOptimizer
{
    readonly Tensor _m, _decayMask;
    readonly Tensor _w1, _w2;   // lerp weights 1−β₁, 1−β₂ as 0-dim tensors on the state's device (TorchSharp's lerp takes a tensor)
    readonly double _beta1, _beta2, _weightDecay;

    public Lion(Tensor decayMask, double beta1 = 0.9, double beta2 = 0.99, double weightDecay = 0.1, string implementation = "auto")
    {
        if (implementation == "fused") throw new BadInputException("--optimizer lion:fused: Lion has no fused kernel; use lion or lion:torch");
        (_beta1, _beta2, _weightDecay) = (beta1, beta2, weightDecay);
        using (no_grad()) _decayMask = decayMask.to(ScalarType.Float32).detach().clone().DetachFromDisposeScope();
        _m = zeros(decayMask.numel(), device: decayMask.device).DetachFromDisposeScope();
        _w1 = tensor((float)(1 - beta1), device: decayMask.device).DetachFromDisposeScope();
        _w2 = tensor((float)(1 - beta2), device: decayMask.device).DetachFromDisposeScope();
    }

    public string Name => "lion";
    public string Implementation => $"torch ops ({_m.device.type} tensors)";
    public long StepCount { get; private set; }
    public IReadOnlyList<(string Name, Tensor Value)> State => [("exp_avg", _m)];
    public long StateBytes => (_m.numel() + _decayMask.numel()) * 4;

    public void Step(Tensor param, Tensor grad, double lr, Tensor? gradScale = null)
    {
        StepCount++;
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        if (gradScale is not null) grad.mul_(gradScale);
        using (var decay = (-lr * _weightDecay).ToScalar())
            if (_weightDecay != 0) param.addcmul_(param, _decayMask, decay);            // p ← p − lr·wd·p where decayed
        var update = _m.lerp(grad, _w1).sign_();                      // sign(β₁m + (1−β₁)g)
        using var step = (-lr).ToScalar();
        param.add_(update, step);                                                     // p ← p − lr·update
        _m.lerp_(grad, _w2);                                          // m ← β₂m + (1−β₂)g
    }

    public void LoadState(IReadOnlyDictionary<string, Tensor> state, long stepCount)
    {
        using var _ = no_grad();
        _m.copy_(state["exp_avg"]);
        StepCount = stepCount;
    }

    public void Dispose()
    {
        _m.Dispose();
        _decayMask.Dispose();
        _w1.Dispose();
        _w2.Dispose();
    }
}
