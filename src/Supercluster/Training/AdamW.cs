using Supercluster.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace Supercluster.Training;

/// <summary>
/// AdamW (Loshchilov &amp; Hutter 2019) on one flat fp32 buffer of parameters (or a ZeRO shard of it). Weight decay is
/// decoupled and applied where <c>decayMask</c> is 1 (matrices, as in GPT-2/3 training). Same arithmetic as
/// torch.optim.AdamW. On a GPU with NVRTC the whole update is one fused kernel (<see cref="FusedAdamW"/>: each element's
/// p, g, m, v read once and written once); otherwise a few large torch ops.
/// </summary>
public sealed class AdamW : IOptimizer
{
    readonly Tensor _m, _v, _decayMask;   // _decayMask: fp32 0/1 for the torch ops, or uint8 for the fused kernel
    readonly FusedAdamW? _fused;
    // Constant Scalars made once: TorchSharp frees a Scalar only by finalizer unless it is disposed.
    readonly Scalar _beta2, _oneMinusBeta2;
    readonly Tensor _beta1Weight;           // lerp takes its weight as a tensor: 0-dim, on the buffers' device

    /// <param name="decayMask">1 where weight decay applies, 0 elsewhere; its length is the buffer's.</param>
    /// <param name="implementation">auto: fused where possible; fused: require the kernel; torch: torch ops.</param>
    public AdamW(Tensor decayMask, double beta1 = 0.9, double beta2 = 0.95, double eps = 1e-8, double weightDecay = 0.1, string implementation = "auto")
    {
        Beta1 = beta1; Beta2 = beta2; Eps = eps; WeightDecay = weightDecay;
        var mode = ParseImplementation(implementation);
        if (mode != "torch" && decayMask.device.type == DeviceType.CUDA)
        {
            _fused = FusedAdamW.For(decayMask.device.index, out string why);
            if (_fused is null && mode == "fused") throw new BadInputException($"--optimizer fused: {why}");
            Implementation = _fused is not null ? $"fused CUDA kernel ({Nvrtc.Describe()})" : $"torch ops ({why})";
        }
        else
        {
            if (mode == "fused") throw new BadInputException("--optimizer fused: the fused AdamW kernel needs the parameters on a CUDA device");
            Implementation = mode == "torch" ? "torch ops (--optimizer torch)" : $"torch ops ({decayMask.device.type} tensors)";
        }
        using (no_grad())
            _decayMask = (_fused is not null ? decayMask.to(ScalarType.Byte) : decayMask.to(ScalarType.Float32)).detach().clone().DetachFromDisposeScope();
        _m = zeros(decayMask.numel(), device: decayMask.device).DetachFromDisposeScope();
        _v = zeros(decayMask.numel(), device: decayMask.device).DetachFromDisposeScope();
        _beta1Weight = tensor((float)(1 - beta1), device: decayMask.device).DetachFromDisposeScope();
        _beta2 = beta2.ToScalar(); _oneMinusBeta2 = (1 - beta2).ToScalar();
    }

    /// <summary>Checks an implementation name: auto, fused or torch.</summary>
    public static string ParseImplementation(string name) => name.Trim().ToLowerInvariant() switch
    {
        "auto" => "auto", "fused" => "fused", "torch" => "torch",
        _ => throw new BadInputException($"--optimizer: unknown AdamW implementation '{name}', expected auto, fused or torch"),
    };

    public string Name => "adamw";
    public double Beta1 { get; }
    public double Beta2 { get; }
    public double Eps { get; }
    public double WeightDecay { get; }
    /// <summary>Which implementation runs, and why (printed by train and bench).</summary>
    public string Implementation { get; }
    public bool IsFused => _fused is not null;
    /// <summary>Updates taken so far (for bias correction).</summary>
    public long StepCount { get; private set; }
    public long Length => _m.numel();
    /// <summary>Bytes of optimizer state on the device: both moments and the decay mask.</summary>
    public long StateBytes => _m.numel() * 8 + _decayMask.numel() * _decayMask.ElementSize;

    /// <summary>
    /// Updates <paramref name="param"/> in place from <paramref name="grad"/> (both flat, this optimizer's length).
    /// <paramref name="gradScale"/>, a one-element fp32 device tensor (the clipping factor), multiplies the gradient
    /// first without a host round trip.
    /// </summary>
    public void Step(Tensor param, Tensor grad, double lr, Tensor? gradScale = null)
    {
        StepCount++;
        double bc1 = 1 - Math.Pow(Beta1, StepCount), bc2 = 1 - Math.Pow(Beta2, StepCount);
        if (_fused is not null)
        {
            _fused.Step(param, grad, _m, _v, _decayMask, gradScale, lr, WeightDecay, Beta1, Beta2, Eps, bc1, bc2);
            return;
        }
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        if (gradScale is not null) grad.mul_(gradScale);
        using (var decay = (-lr * WeightDecay).ToScalar())
            if (WeightDecay != 0) param.addcmul_(param, _decayMask, decay);               // p ← p − lr·wd·p where decayed
        _m.lerp_(grad, _beta1Weight);                                                      // m ← β₁m + (1−β₁)g
        _v.mul_(_beta2).addcmul_(grad, grad, _oneMinusBeta2);                              // v ← β₂v + (1−β₂)g²
        using var bc2Sqrt = Math.Sqrt(bc2).ToScalar();
        using var eps = Eps.ToScalar();
        using var step = (-lr / bc1).ToScalar();
        var denom = _v.sqrt().div_(bc2Sqrt).add_(eps);                                     // √v̂ + ε
        param.addcdiv_(_m, denom, step);                                                   // p ← p − lr·m̂/(√v̂ + ε)
    }

    /// <summary>First and second moments (views, not copies).</summary>
    public (Tensor ExpAvg, Tensor ExpAvgSq) State => (_m, _v);

    /// <summary>The checkpoint's names: torch.optim.AdamW's.</summary>
    IReadOnlyList<(string Name, Tensor Value)> IOptimizer.State => [("exp_avg", _m), ("exp_avg_sq", _v)];

    void IOptimizer.LoadState(IReadOnlyDictionary<string, Tensor> state, long stepCount) =>
        LoadState(state["exp_avg"], state["exp_avg_sq"], stepCount);

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
        _beta1Weight.Dispose(); _beta2.Dispose(); _oneMinusBeta2.Dispose();
    }
}
