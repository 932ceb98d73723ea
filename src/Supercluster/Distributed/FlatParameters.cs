using Supercluster.Runtime;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Supercluster.Distributed;

/// <summary>
/// The model's parameters and gradients as views into two flat fp32 vectors (in <c>named_parameters</c> order),
/// padded to a multiple of the world size so they split into equal ZeRO shards. Averaging gradients and the optimizer
/// then work on one large tensor each, with no copies (as PyTorch DDP's gradient_as_bucket_view).
/// </summary>
public sealed class FlatParameters : IDisposable
{
    readonly (string Name, Parameter P, long Offset, long Length)[] _items;

    public FlatParameters(IEnumerable<(string Name, Parameter P)> parameters, int worldSize)
    {
        long offset = 0;
        _items = parameters.Select(p => { var item = (p.Name, p.P, offset, p.P.numel()); offset += p.P.numel(); return item; }).ToArray();
        Count = offset;
        PaddedCount = (offset + worldSize - 1) / worldSize * worldSize;
        WorldSize = worldSize;
        var device = _items[0].P.device;
        Values = zeros(PaddedCount, device: device).DetachFromDisposeScope();
        Gradients = zeros(PaddedCount, device: device).DetachFromDisposeScope();
        using var _ = no_grad();
        foreach (var (_, p, off, n) in _items)
        {
            if (p.dtype != ScalarType.Float32) throw new InvalidOperationException($"flat parameters are fp32; {p.dtype} found");
            var view = Values.narrow(0, off, n);
            view.copy_(p.detach().reshape(-1));
            p.set_(view.view(p.shape));                    // the parameter now lives inside Values
            p.grad = Gradients.narrow(0, off, n).view(p.shape);
        }
    }

    /// <summary>Real parameter count.</summary>
    public long Count { get; }
    /// <summary>Count rounded up to a multiple of the world size.</summary>
    public long PaddedCount { get; }
    public int WorldSize { get; }
    public long ShardLength => PaddedCount / WorldSize;
    /// <summary>All parameters, end to end (padding stays 0).</summary>
    public Tensor Values { get; }
    /// <summary>All gradients, end to end; autograd accumulates into these views in place.</summary>
    public Tensor Gradients { get; }

    /// <summary>1 for matrices (decayed), 0 for vectors (biases, norms): full length, padding 0.</summary>
    public Tensor DecayMask()
    {
        var mask = zeros(PaddedCount, device: Values.device);
        foreach (var (_, p, off, n) in _items)
            if (p.dim() >= 2) mask.narrow(0, off, n).fill_(1.0);
        return mask;
    }

    /// <summary>
    /// Autograd accumulates into an existing .grad in place; should anything have replaced a gradient tensor
    /// (or code set it to null), copy it into the flat buffer and restore the view.
    /// </summary>
    public void EnsureGradientViews()
    {
        using var _ = no_grad();
        foreach (var (_, p, off, n) in _items)
        {
            var view = Gradients.narrow(0, off, n);
            if (p.grad is { } g && LibTorchLoader.DataPtr(g) == LibTorchLoader.DataPtr(view)) continue;
            if (p.grad is { } other) view.copy_(other.reshape(-1)); else view.zero_();
            p.grad = view.view(p.shape);
        }
    }

    public void Dispose()
    {
        Values.Dispose();
        Gradients.Dispose();
    }
}
