using TorchSharp;
using static TorchSharp.torch;

namespace Supercluster.Model;

/// <summary>
/// Keys and values of every layer for the tokens seen so far, preallocated to the context length,
/// so each decode step attends over the cache instead of recomputing the prefix.
/// </summary>
public class KvCache : IDisposable
{
    protected readonly Tensor[] _k, _v; // per layer [B, n_kv_head, seq_len, head_dim]

    public KvCache(ModelConfig c, long batch, Device device, ScalarType dtype)
    {
        _k = new Tensor[c.NLayer];
        _v = new Tensor[c.NLayer];
        for (int i = 0; i < c.NLayer; i++)
        {
            _k[i] = zeros(batch, c.NKvHead, c.SeqLen, c.HeadDim, dtype: dtype, device: device).DetachFromDisposeScope();
            _v[i] = zeros(batch, c.NKvHead, c.SeqLen, c.HeadDim, dtype: dtype, device: device).DetachFromDisposeScope();
        }
        Capacity = c.SeqLen;
    }

    /// <summary>Tokens already in the cache (the position of the next token).</summary>
    public long Length { get; private set; }
    public long Capacity { get; }

    /// <summary>Writes this step's k, v [B, H_kv, T_new, hd] for <paramref name="layer"/>; returns all keys/values so far.</summary>
    public virtual (Tensor K, Tensor V) Append(int layer, Tensor k, Tensor v)
    {
        long t = k.shape[2];
        if (Length + t > Capacity) throw new InvalidOperationException($"KV cache full: {Length} + {t} > context {Capacity}");
        using (no_grad())
        {
            _k[layer].narrow(2, Length, t).copy_(k);
            _v[layer].narrow(2, Length, t).copy_(v);
        }
        return (_k[layer].narrow(2, 0, Length + t), _v[layer].narrow(2, 0, Length + t));
    }

    /// <summary>Called once per forward after every layer appended.</summary>
    public virtual void Advance(long tokens) => Length += tokens;

    // Batched decoding (Inference/BatchKvCache) overrides these two: every row at its own position.
    /// <summary>Positions [B, T] of the next <paramref name="t"/> tokens per row, or null when all rows start at <see cref="Length"/>.</summary>
    public virtual Tensor? RowPositions(long t) => null;

    /// <summary>Boolean attention mask [B, 1, T, T_keys] for the keys <see cref="Append"/> returns, or null for plain causal attention.</summary>
    public virtual Tensor? AttentionMask => null;

    public virtual void Dispose()
    {
        foreach (var t in _k) t.Dispose();
        foreach (var t in _v) t.Dispose();
    }
}
