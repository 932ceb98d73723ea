using static TorchSharp.torch;

namespace Supercluster.Training;

/// <summary>
/// An update rule over one flat fp32 parameter vector (or this rank's ZeRO shard of it), with its state as named flat
/// tensors of the same length. Everything else (parameter groups, sharding, compute weights, checkpoint files) is
/// <see cref="TrainingOptimizer"/>'s, so a new optimizer is one class implementing this plus a line in
/// <see cref="Optimizers"/>. Contract: where the gradient is 0 and the decay mask is 0, a step leaves the parameter
/// unchanged (frozen parameters rely on it).
/// </summary>
public interface IOptimizer : IDisposable
{
    /// <summary>Registered name (<see cref="Optimizers"/>), recorded in checkpoints.</summary>
    string Name { get; }
    /// <summary>Which implementation runs, and why (printed by train and bench).</summary>
    string Implementation { get; }
    /// <summary>Updates taken so far.</summary>
    long StepCount { get; }
    /// <summary>State tensors by name (views, this optimizer's length), as the checkpoint stores them.</summary>
    IReadOnlyList<(string Name, Tensor Value)> State { get; }
    /// <summary>Bytes of optimizer state on the device.</summary>
    long StateBytes { get; }

    /// <summary>
    /// Updates <paramref name="param"/> in place from <paramref name="grad"/> (both flat, this optimizer's length).
    /// <paramref name="gradScale"/>, a one-element fp32 device tensor (the clipping factor), multiplies the gradient
    /// first without a host round trip.
    /// </summary>
    void Step(Tensor param, Tensor grad, double lr, Tensor? gradScale = null);

    /// <summary>Replaces the state (every name of <see cref="State"/>, this optimizer's length) and the step count.</summary>
    void LoadState(IReadOnlyDictionary<string, Tensor> state, long stepCount);
}
