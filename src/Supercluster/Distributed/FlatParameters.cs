using Supercluster.Runtime;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Supercluster.Distributed;

/// <summary>
/// The model's trainable parameters and gradients as views into two flat fp32 vectors (in <c>named_parameters</c> order),
/// padded to a multiple of the world size so they split into equal ZeRO shards. Averaging gradients and the optimizer
/// then work on one large tensor each, with no copies (as PyTorch DDP's gradient_as_bucket_view).
/// <para>
/// Mixed precision (<see cref="BindCompute"/>): the fp32 vectors become the master copy, and the model's parameters
/// are views of a second, low-precision vector (the compute weights, e.g. bf16) that the optimizer rewrites from the
/// master after each update, as llm.c keeps master weights; modules see plain tensors and cast nothing. Autograd
/// accumulates the compute gradients; <see cref="AccumulateComputeGradients"/> adds them into the fp32 gradients after
/// each micro-batch, so accumulation and the all-reduce stay in fp32 (Megatron-LM's main_grad).
/// </para>
/// <para>
/// Frozen parameters (<c>requires_grad = false</c>, e.g. base weights under LoRA adapters) are not flattened: they get
/// no gradient buffer, no optimizer state and no master copy, and stay the model's own tensors (<see cref="Frozen"/>).
/// </para>
/// </summary>
public sealed class FlatParameters : IDisposable
{
    // P: the model's fp32 parameter as given (disposed by the model's conversion under mixed precision; then _compute holds the live ones).
    readonly (string Name, Parameter P, long Offset, long Length, long[] Shape, bool Trainable)[] _items;
    Parameter[]? _compute;   // the model's parameters under mixed precision, views of ComputeValues

    public FlatParameters(IEnumerable<(string Name, Parameter P)> parameters, int worldSize)
    {
        long offset = 0;
        var all = parameters.ToList();
        Frozen = all.Where(p => !p.P.requires_grad).Select(p => (p.Name, p.P.numel(), (int)p.P.dim())).ToArray();
        if (all.Count == Frozen.Count) throw new BadInputException("every parameter of the model is frozen: nothing to train");
        _items = all.Where(p => p.P.requires_grad).Select(p => { var item = (p.Name, p.P, offset, p.P.numel(), p.P.shape, p.P.requires_grad); offset += p.P.numel(); return item; }).ToArray();
        Count = offset;
        PaddedCount = (offset + worldSize - 1) / worldSize * worldSize;
        WorldSize = worldSize;
        var device = _items[0].P.device;
        Values = zeros(PaddedCount, device: device).DetachFromDisposeScope();
        Gradients = zeros(PaddedCount, device: device).DetachFromDisposeScope();
        using var _ = no_grad();
        foreach (var (_, p, off, n, _, _) in _items)
        {
            if (p.dtype != ScalarType.Float32) throw new InvalidOperationException($"flat parameters are fp32; {p.dtype} found");
            var view = Values.narrow(0, off, n);
            view.copy_(p.detach().reshape(-1));
            p.set_(view.view(p.shape));                    // the parameter now lives inside Values
            p.grad = Gradients.narrow(0, off, n).view(p.shape);
        }
    }

    /// <summary>Frozen parameters (name, elements, rank), which live outside the flat vectors.</summary>
    public IReadOnlyList<(string Name, long Length, int Dim)> Frozen { get; }

    /// <summary>Real (trainable) parameter count.</summary>
    public long Count { get; }
    /// <summary>Count rounded up to a multiple of the world size.</summary>
    public long PaddedCount { get; }
    public int WorldSize { get; }
    public long ShardLength => PaddedCount / WorldSize;
    /// <summary>All parameters (fp32; the master copy under mixed precision), end to end (padding stays 0).</summary>
    public Tensor Values { get; }
    /// <summary>All gradients (fp32), end to end; autograd accumulates into these views in place (fp32 compute).</summary>
    public Tensor Gradients { get; private set; }
    /// <summary>The compute weights the model uses under mixed precision [padded], or null (the model uses <see cref="Values"/>).</summary>
    public Tensor? ComputeValues { get; private set; }
    /// <summary>Compute-dtype gradients autograd fills under mixed precision [padded], or null.</summary>
    public Tensor? ComputeGradients { get; private set; }
    /// <summary>False between ZeRO-2 steps: the full gradient buffers are released (<see cref="ReleaseGradients"/>).</summary>
    public bool HasGradients { get; private set; } = true;
    /// <summary>The dtype the model computes in: fp32, or that of the compute weights.</summary>
    public ScalarType ComputeDtype => ComputeValues?.dtype ?? ScalarType.Float32;

    /// <summary>(name, fp32 value view, rank of the parameter ≥ 2, trainable) in flat order.</summary>
    public IEnumerable<(string Name, Tensor Value, long Offset, long Length, int Dim, bool Trainable)> Items =>
        _items.Select(i => (i.Name, Values.narrow(0, i.Offset, i.Length).view(i.Shape), i.Offset, i.Length, i.Shape.Length, i.Trainable));

    /// <summary>
    /// Mixed precision: <paramref name="computeParameters"/> are the model's parameters after its conversion to the
    /// compute dtype (same names and order as at construction). They become views of <see cref="ComputeValues"/>,
    /// written from the fp32 master here and by the optimizer after each update.
    /// </summary>
    public void BindCompute(IEnumerable<(string Name, Parameter P)> computeParameters)
    {
        var trainable = _items.Select(i => i.Name).ToHashSet();
        var ps = computeParameters.Where(p => trainable.Contains(p.Name)).ToArray();
        if (ps.Length != _items.Length || ps.Zip(_items).Any(z => z.First.Name != z.Second.Name || z.First.P.numel() != z.Second.Length))
            throw new InvalidOperationException("compute parameters differ from the master parameters");
        var dtype = ps[0].P.dtype;
        if (ps.Any(p => p.P.dtype != dtype)) throw new InvalidOperationException("compute parameters of mixed dtypes");
        ComputeValues = empty(PaddedCount, dtype: dtype, device: Values.device).DetachFromDisposeScope();
        ComputeGradients = zeros(PaddedCount, dtype: dtype, device: Values.device).DetachFromDisposeScope();
        using var _ = no_grad();
        ComputeValues.copy_(Values);
        foreach (var ((_, p), (_, _, off, n, _, _)) in ps.Zip(_items))
        {
            p.set_(ComputeValues.narrow(0, off, n).view(p.shape));
            p.grad = ComputeGradients.narrow(0, off, n).view(p.shape);
        }
        _compute = ps.Select(p => p.P).ToArray();
    }

    /// <summary>Zeroes every gradient at once (they are views of one buffer; two under mixed precision), allocating them if released.</summary>
    public void ZeroGradients()
    {
        if (!HasGradients)
        {
            Gradients = zeros(PaddedCount, device: Values.device).DetachFromDisposeScope();
            if (ComputeValues is not null) ComputeGradients = zeros(PaddedCount, dtype: ComputeValues.dtype, device: Values.device).DetachFromDisposeScope();
            HasGradients = true;
            EnsureGradientViews();   // every parameter's .grad a view of the new buffer
            return;
        }
        Gradients.zero_();
        ComputeGradients?.zero_();
    }

    /// <summary>
    /// ZeRO-2: frees the full gradient buffers (fp32 and, under mixed precision, the compute dtype's) once their
    /// reduce-scatter has run; every parameter's .grad becomes null. <see cref="ZeroGradients"/> allocates them again.
    /// </summary>
    public void ReleaseGradients()
    {
        if (!HasGradients) return;
        for (int i = 0; i < _items.Length; i++) (_compute?[i] ?? _items[i].P).grad = null;
        Gradients.Dispose();
        ComputeGradients?.Dispose();
        Gradients = empty(0, device: Values.device).DetachFromDisposeScope();
        ComputeGradients = null;
        HasGradients = false;
    }

    /// <summary>
    /// Under mixed precision, after a micro-batch's backward: fp32 gradients ← (first ? 0 : them) + compute gradients,
    /// and the compute gradients are zeroed for the next micro-batch. Nothing to do in fp32.
    /// </summary>
    public void AccumulateComputeGradients(bool first)
    {
        if (ComputeGradients is null) return;
        using var _ = no_grad();
        EnsureGradientViews();
        if (first) Gradients.copy_(ComputeGradients); else Gradients.add_(ComputeGradients);
        ComputeGradients.zero_();
    }

    /// <summary>Compute weights ← master (rounded), for <paramref name="offset"/>…+<paramref name="length"/> of the flat vector.</summary>
    public void WriteComputeWeights(long offset, long length)
    {
        if (ComputeValues is null) return;
        using var _ = no_grad();
        ComputeValues.narrow(0, offset, length).copy_(Values.narrow(0, offset, length));
    }

    /// <summary>
    /// Autograd accumulates into an existing .grad in place; should anything have replaced a gradient tensor
    /// (or code set it to null), copy it into the flat buffer and restore the view.
    /// </summary>
    public void EnsureGradientViews()
    {
        using var _ = no_grad();
        var grads = ComputeGradients ?? Gradients;
        for (int i = 0; i < _items.Length; i++)
        {
            var (_, master, off, n, _, _) = _items[i];
            var p = _compute?[i] ?? master;
            var view = grads.narrow(0, off, n);
            if (p.grad is { } g && LibTorchLoader.DataPtr(g) == LibTorchLoader.DataPtr(view)) continue;
            if (p.grad is { } other) view.copy_(other.reshape(-1)); else view.zero_();
            p.grad = view.view(p.shape);
        }
    }

    public void Dispose()
    {
        Values.Dispose();
        Gradients.Dispose();
        ComputeValues?.Dispose();
        ComputeGradients?.Dispose();
    }
}
