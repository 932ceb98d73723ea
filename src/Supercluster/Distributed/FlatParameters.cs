using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Supercluster.Distributed;

/// <summary>
/// The model's parameters laid end to end in one flat fp32 vector (in <c>named_parameters</c> order), padded to a
/// multiple of the world size so it splits into equal ZeRO shards. Gradients and parameters are copied in and out
/// of flat buffers, which turns gradient averaging and the optimizer into a few large ops.
/// </summary>
public sealed class FlatParameters
{
    readonly (string Name, Parameter P, long Offset, long Length)[] _items;

    public FlatParameters(IEnumerable<(string Name, Parameter P)> parameters, int worldSize)
    {
        long offset = 0;
        _items = parameters.Select(p => { var item = (p.Name, p.P, offset, p.P.numel()); offset += p.P.numel(); return item; }).ToArray();
        Count = offset;
        PaddedCount = (offset + worldSize - 1) / worldSize * worldSize;
        WorldSize = worldSize;
    }

    /// <summary>Real parameter count.</summary>
    public long Count { get; }
    /// <summary>Count rounded up to a multiple of the world size.</summary>
    public long PaddedCount { get; }
    public int WorldSize { get; }
    public long ShardLength => PaddedCount / WorldSize;
    public Device Device => _items[0].P.device;

    /// <summary>1 for matrices (decayed), 0 for vectors (biases, norms): full length, padding 0.</summary>
    public Tensor DecayMask()
    {
        var mask = zeros(PaddedCount, device: Device);
        foreach (var (_, p, off, n) in _items)
            if (p.dim() >= 2) mask.narrow(0, off, n).fill_(1.0);
        return mask;
    }

    public void GatherGradients(Tensor flat)
    {
        using var _ = no_grad();
        flat.zero_();
        foreach (var (_, p, off, n) in _items)
            if (p.grad is { } g) flat.narrow(0, off, n).copy_(g.reshape(-1));
    }

    public void GatherParameters(Tensor flat)
    {
        using var _ = no_grad();
        if (PaddedCount > Count) flat.narrow(0, Count, PaddedCount - Count).zero_();
        foreach (var (_, p, off, n) in _items) flat.narrow(0, off, n).copy_(p.detach().reshape(-1));
    }

    public void ScatterParameters(Tensor flat)
    {
        using var _ = no_grad();
        foreach (var (_, p, off, n) in _items) p.copy_(flat.narrow(0, off, n).view(p.shape));
    }
}
