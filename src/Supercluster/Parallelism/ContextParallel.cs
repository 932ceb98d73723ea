using Supercluster.Distributed;
using Supercluster.Model;
using static TorchSharp.torch;

namespace Supercluster.Parallelism;

/// <summary>
/// Context parallelism (the all-gather form Llama 3 trained with, Dubey et al. 2024 §3.3.2): each sequence of T tokens is
/// cut into 2·C chunks and CP rank i holds chunks i and 2C−1−i, so every rank gets the same share of the causal
/// triangle's work. Before attention each layer all-gathers the keys and values of the whole sequence over the CP group
/// (their gradients are reduce-scattered back, <see cref="Region.GatherAlong"/>); queries stay local.
/// <para>
/// It reaches the model through the one seam attention already has, <see cref="KvCache"/>: this context gives the local
/// tokens' global positions (learned or rotary embeddings follow the chunks), returns the gathered keys/values from
/// <see cref="Append"/>, and the causal mask of local queries against them. The model code does not change.
/// </para>
/// </summary>
public sealed class ContextParallel : KvCache
{
    readonly ICommunicator _cp;
    readonly Tensor _positions;   // [1, T/C]: global positions of this rank's tokens
    readonly Tensor _mask;        // [1, 1, T/C, T]: local query may see gathered key (keys in gather order)

    /// <param name="seqLen">T, the whole sequence (divisible by 2·C).</param>
    public ContextParallel(ICommunicator cp, long seqLen, Device device) : base(device)
    {
        _cp = cp;
        Capacity = seqLen;
        var local = LocalPositions(seqLen, cp.Rank, cp.WorldSize);
        _positions = tensor(local, device: device).unsqueeze(0).DetachFromDisposeScope();
        // Keys arrive in rank order, each rank's two chunks in its own order: their positions are every rank's LocalPositions.
        long[] keys = [.. Enumerable.Range(0, cp.WorldSize).SelectMany(r => LocalPositions(seqLen, r, cp.WorldSize))];
        using var q = tensor(local, device: device).view(-1, 1);
        using var k = tensor(keys, device: device).view(1, -1);
        _mask = q.ge(k).view(1, 1, local.Length, keys.Length).DetachFromDisposeScope();
    }

    /// <summary>Global positions of CP rank <paramref name="rank"/>'s tokens: chunk rank, then chunk 2C−1−rank.</summary>
    public static long[] LocalPositions(long seqLen, int rank, int cpSize)
    {
        if (seqLen % (2L * cpSize) != 0)
            throw new BadInputException($"--cp {cpSize}: the sequence length {seqLen} must be divisible by 2 × cp = {2 * cpSize} (two chunks per rank)");
        long chunk = seqLen / (2L * cpSize);
        long first = rank * chunk, second = (2L * cpSize - 1 - rank) * chunk;
        return [.. Enumerable.Range(0, (int)chunk).Select(i => first + i), .. Enumerable.Range(0, (int)chunk).Select(i => second + i)];
    }

    /// <summary>This rank's tokens of a [B, T] batch (ids or targets, row-major): [B, T/C], chunks in <see cref="LocalPositions"/> order.</summary>
    public static long[] LocalTokens(long[] batch, int batchSize, long seqLen, int rank, int cpSize)
    {
        var positions = LocalPositions(seqLen, rank, cpSize);
        var local = new long[batchSize * positions.Length];
        for (int b = 0; b < batchSize; b++)
            for (int i = 0; i < positions.Length; i++)
                local[b * positions.Length + i] = batch[b * seqLen + positions[i]];
        return local;
    }

    public override Tensor Positions(long t) => t == _positions.shape[1] ? _positions
        : throw new InvalidOperationException($"context parallel: {t} tokens in this forward, expected the rank's {_positions.shape[1]}");

    public override Tensor? Mask(long t) => _mask;

    /// <summary>Keys and values [B, H_kv, T/C, hd] of this rank → the whole sequence's [B, H_kv, T, hd] (gather order).</summary>
    public override (Tensor K, Tensor V) Append(int layer, Tensor k, Tensor v) =>
        (Region.GatherAlong(k, 2, _cp), Region.GatherAlong(v, 2, _cp));

    public override void Advance(long tokens) { }

    public override void Dispose()
    {
        _positions.Dispose();
        _mask.Dispose();
    }
}
