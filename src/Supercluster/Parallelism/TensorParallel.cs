using Supercluster.Distributed;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Supercluster.Parallelism;

/// <summary>
/// How one parameter is split over the TP ranks: along <see cref="Dim"/>, each of its <see cref="Blocks"/> fused blocks
/// separately (GPT-2's c_attn is [q; k; v]: rank r holds [q_r; k_r; v_r], so its output splits into its heads' q, k, v).
/// </summary>
public sealed record TpShard(int Dim, int Blocks = 1)
{
    /// <summary>Rank <paramref name="rank"/>'s part of the full tensor (a copy).</summary>
    public Tensor Take(Tensor full, int rank, int ranks)
    {
        var blocks = full.chunk(Blocks, Dim);
        // A copy that owns its memory (cat of one block may alias the input, which autograd then treats as a view).
        return cat(blocks.Select(b => b.chunk(ranks, Dim)[rank]).ToArray(), Dim).contiguous().clone();
    }

    /// <summary>The full tensor from every rank's part (an all-gather over <paramref name="group"/>).</summary>
    public Tensor Gather(Tensor part, ICommunicator group)
    {
        var all = Region.AllGather(part, Dim, group).chunk(group.WorldSize, Dim);          // per rank: [block 0 … block B-1]
        var perRank = all.Select(p => p.chunk(Blocks, Dim)).ToArray();
        return cat(Enumerable.Range(0, Blocks).SelectMany(b => perRank.Select(r => r[b])).ToArray(), Dim);
    }
}

/// <summary>
/// Megatron-LM's tensor parallelism (Shoeybi et al. 2019) applied to a model's own modules through forward hooks:
/// a column-parallel linear keeps rows of its weight (output features), a row-parallel one columns (input features);
/// the collectives sit at the region's edges — after the norm that feeds the column-parallel layers (f: identity
/// forward, all-reduce backward; with sequence parallelism, all-gather / reduce-scatter) and after the row-parallel
/// layer (g: all-reduce; with sequence parallelism, reduce-scatter).
/// </summary>
public static class TensorParallel
{
    /// <summary>Replaces <paramref name="lin"/>'s weight (and bias) by this rank's rows: out/T features (per fused block).</summary>
    public static void ColumnParallel(Linear lin, ICommunicator tp, int blocks, IDictionary<string, TpShard> shards, string name)
    {
        var spec = new TpShard(0, blocks);
        // Parameters are made in grad mode: one made under no_grad is a view that autograd refuses once the flat buffers rebind it.
        lin.weight = new Parameter(Part(spec, lin.weight!, tp));
        if (lin.bias is { } bias) lin.bias = new Parameter(Part(spec, bias, tp));
        shards[name + ".weight"] = spec;
        if (lin.bias is not null) shards[name + ".bias"] = spec;
    }

    /// <summary>
    /// Replaces <paramref name="lin"/>'s weight by this rank's columns (in/T features) and sums the partial outputs
    /// over TP (all-reduce, or reduce-scatter along the sequence under sequence parallelism). The bias, replicated,
    /// is counted once: the module adds it on every rank, so ranks other than 0 take it back out before the sum
    /// (detached, so every rank's bias gradient is the whole output gradient, as for any replicated parameter).
    /// </summary>
    public static void RowParallel(Linear lin, ICommunicator tp, bool sequenceParallel, IDictionary<string, TpShard> shards, string name)
    {
        var spec = new TpShard(1);
        lin.weight = new Parameter(Part(spec, lin.weight!, tp));
        shards[name + ".weight"] = spec;
        lin.register_forward_hook((m, _, y) =>
        {
            if (tp.Rank != 0 && ((Linear)m).bias is { } b) y = y - b.detach();
            return sequenceParallel ? Region.ReduceScatterAlong(y, 1, tp) : Region.ReduceFrom(y, tp);
        });
    }

    /// <summary>
    /// The entry of a TP region after <paramref name="norm"/>: its output [B, T, d] goes to every rank (identity forward,
    /// all-reduce backward), or under sequence parallelism its sequence shards are all-gathered (reduce-scatter backward).
    /// </summary>
    public static void EnterAfter(nn.Module<Tensor, Tensor> norm, ICommunicator tp, bool sequenceParallel) =>
        norm.register_forward_hook((_, _, y) => Enter(y, tp, sequenceParallel));

    /// <summary>This rank's part of a full parameter, detached (no_grad).</summary>
    internal static Tensor Part(TpShard spec, Tensor full, ICommunicator tp)
    {
        using var _ = no_grad();
        return spec.Take(full, tp.Rank, tp.WorldSize);
    }

    public static Tensor Enter(Tensor y, ICommunicator tp, bool sequenceParallel) =>
        sequenceParallel ? Region.GatherAlong(y, 1, tp) : Region.CopyTo(y, tp);
}
