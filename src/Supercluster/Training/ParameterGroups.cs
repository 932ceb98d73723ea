using Supercluster.Distributed;
using static TorchSharp.torch;

namespace Supercluster.Training;

/// <summary>How the optimizer treats a parameter.</summary>
public enum ParameterGroup
{
    /// <summary>Matrices (projections, embeddings): decoupled weight decay applies (GPT-2/3 practice).</summary>
    Decay,
    /// <summary>Vectors (biases, norm gains): no weight decay.</summary>
    NoDecay,
    /// <summary>requires_grad = false (e.g. base weights under trainable adapters): never updated.</summary>
    Frozen,
}

/// <summary>
/// The optimizer's parameter groups over the flat vector: decay (rank ≥ 2), no decay (rank 1) and frozen
/// (requires_grad = false, set on the model before training starts), as nanoGPT's configure_optimizers splits them.
/// Frozen parameters are listed for the log but live outside the flat vector (offset -1): they have no optimizer state.
/// </summary>
public sealed class ParameterGroups
{
    readonly long _length;
    readonly Device _device;

    public ParameterGroups(FlatParameters flat)
        : this(flat.Items.Select(i => (i.Name, i.Offset, i.Length, i.Dim, i.Trainable))
            .Concat(flat.Frozen.Select(f => (f.Name, -1L, f.Length, 0, false))), flat.PaddedCount, flat.Values.device) { }

    /// <param name="items">Every parameter's place in the model's flat order, its number of dims, whether it trains.</param>
    /// <param name="length">Length of the masks (the flat vector with its padding).</param>
    public ParameterGroups(IEnumerable<(string Name, long Offset, long Length, int Dim, bool Trainable)> items, long length, Device device)
    {
        (_length, _device) = (length, device);
        Assignments = items.Select(i => (i.Name, !i.Trainable ? ParameterGroup.Frozen : i.Dim >= 2 ? ParameterGroup.Decay : ParameterGroup.NoDecay, i.Offset, i.Length)).ToArray();
    }

    /// <summary>Every parameter's group and place in the flat vector, in flat order.</summary>
    public IReadOnlyList<(string Name, ParameterGroup Group, long Offset, long Length)> Assignments { get; }

    public bool HasFrozen => Assignments.Any(a => a.Group == ParameterGroup.Frozen);

    /// <summary>fp32 [padded]: 1 where the group is <paramref name="group"/>, else 0 (padding 0).</summary>
    public Tensor Mask(ParameterGroup group)
    {
        var mask = zeros(_length, device: _device);
        foreach (var a in Assignments)
            if (a.Group == group && a.Offset >= 0) mask.narrow(0, a.Offset, a.Length).fill_(1.0);
        return mask;
    }

    /// <summary>"decay 24 tensors (1,234 elements), no decay 50 (…), frozen 0" for the log.</summary>
    public string Describe() => string.Join(", ", Enum.GetValues<ParameterGroup>().Select(g =>
    {
        var members = Assignments.Where(a => a.Group == g).ToList();
        return $"{g.ToString().ToLowerInvariant()} {members.Count} tensors ({members.Sum(a => a.Length):N0} parameters)";
    }));
}
