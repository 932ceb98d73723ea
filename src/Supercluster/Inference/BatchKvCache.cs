using Supercluster.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace Supercluster.Inference;

/// <summary>
/// A KV cache with one slot (row) per sequence, each at its own length, for continuous batching: sequences join
/// (rent a slot, prefill it alone) and leave (release it) between decode steps. Before each forward,
/// <see cref="Begin"/> names the slots it covers; the model then sees per-row positions and an attention mask
/// so each row attends to its own keys only (padding beyond a row's length is masked out).
/// </summary>
public sealed class BatchKvCache : KvCache
{
    readonly long[] _len;
    readonly Stack<int> _free;
    readonly Device _device;
    int[] _rows = [];
    long _t, _keys;
    Tensor? _rowIndex, _positions, _mask, _writeAt;

    public BatchKvCache(ModelConfig c, int slots, Device device, ScalarType dtype) : base(c, slots, device, dtype)
    {
        _len = new long[slots];
        _free = new Stack<int>(Enumerable.Range(0, slots).Reverse());
        _device = device;
    }

    public int Slots => _len.Length;
    public int FreeSlots => _free.Count;

    /// <summary>A free slot (length 0), or -1 when all are in use.</summary>
    public int Rent() => _free.Count > 0 ? _free.Pop() : -1;

    public void Release(int slot) { _len[slot] = 0; _free.Push(slot); }

    /// <summary>Tokens cached in <paramref name="slot"/>.</summary>
    public long LengthOf(int slot) => _len[slot];

    /// <summary>The next forward covers <paramref name="slots"/> (row i = slots[i]), each with <paramref name="t"/> new tokens.</summary>
    public void Begin(IReadOnlyList<int> slots, long t)
    {
        End();
        _rows = slots.ToArray();
        _t = t;
        long maxLen = 0;
        foreach (var s in _rows)
        {
            if (_len[s] + t > Capacity) throw new InvalidOperationException($"KV cache slot {s} full: {_len[s]} + {t} > context {Capacity}");
            maxLen = Math.Max(maxLen, _len[s]);
        }
        _keys = maxLen + t;
        using var scope = NewDisposeScope();
        var starts = tensor(_rows.Select(s => _len[s]).ToArray(), device: _device);                 // [B]
        var steps = arange(t, dtype: ScalarType.Int64, device: _device);                              // [T]
        var pos = starts.unsqueeze(1) + steps.unsqueeze(0);                                           // [B, T]
        var keys = arange(_keys, dtype: ScalarType.Int64, device: _device);                           // [K]
        _mask = (keys.view(1, 1, 1, -1) <= pos.view(_rows.Length, 1, t, 1)).DetachFromDisposeScope(); // [B, 1, T, K]
        _positions = pos.DetachFromDisposeScope();
        _rowIndex = tensor(_rows.Select(s => (long)s).ToArray(), device: _device).DetachFromDisposeScope();
        _writeAt = starts.DetachFromDisposeScope();                                                  // [B] position of the next token
    }

    /// <summary>Drops the per-forward tensors (also done by the next <see cref="Begin"/>).</summary>
    public void End()
    {
        _rowIndex?.Dispose(); _positions?.Dispose(); _mask?.Dispose(); _writeAt?.Dispose();
        _rowIndex = _positions = _mask = _writeAt = null;
    }

    public override Tensor Positions(long t) =>
        t == _t && _positions is not null ? _positions : throw new InvalidOperationException($"BatchKvCache.Begin must precede the forward, for its {t} tokens (was called for {_t})");

    /// <summary>[B, 1, T, K]: each row sees its own keys up to its own position (a row's padding beyond its length never).</summary>
    public override Tensor? Mask(long t)
    {
        Positions(t);                           // checks Begin covered this forward
        return _mask;
    }

    public override (Tensor K, Tensor V) Append(int layer, Tensor k, Tensor v)
    {
        if (_rowIndex is null) throw new InvalidOperationException("BatchKvCache.Begin must precede the forward");
        using (no_grad())
        {
            if (_t == 1)
            {
                // Decode step: one scatter per tensor writes every row's new key/value at its own position.
                using var kv = k.squeeze(2);                                                   // [B, H, hd]
                using var vv = v.squeeze(2);
                _k[layer].index_put_(kv, TensorIndex.Tensor(_rowIndex), TensorIndex.Colon, TensorIndex.Tensor(_writeAt!));
                _v[layer].index_put_(vv, TensorIndex.Tensor(_rowIndex), TensorIndex.Colon, TensorIndex.Tensor(_writeAt!));
            }
            else for (int i = 0; i < _rows.Length; i++)
            {
                int s = _rows[i];
                using var kd = _k[layer][s].narrow(1, _len[s], _t);
                using var vd = _v[layer][s].narrow(1, _len[s], _t);
                using var ki = k[i];
                using var vi = v[i];
                kd.copy_(ki);
                vd.copy_(vi);
            }
        }
        return (_k[layer].index_select(0, _rowIndex).narrow(2, 0, _keys), _v[layer].index_select(0, _rowIndex).narrow(2, 0, _keys));
    }

    public override void Advance(long tokens)
    {
        foreach (var s in _rows) _len[s] += tokens;
    }

    public override void Dispose()
    {
        End();
        base.Dispose();
    }
}
