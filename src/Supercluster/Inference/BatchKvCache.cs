using Supercluster.Model;
using Supercluster.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace Supercluster.Inference;

/// <summary>
/// A KV cache with one preallocated slot (row, per layer [slots, H_kv, context, hd]) per sequence, each at its own
/// length, for continuous batching: sequences join (rent a slot, prefill it) and leave (release it) between steps.
/// Before each forward, <see cref="Begin(IReadOnlyList{int}, IReadOnlyList{long})"/> names the slots it covers and how
/// many new tokens each row brings (rows shorter than the forward's T are padded at the end: a batch of prompt chunks of
/// different lengths is one forward). The model then sees per-row positions and a mask so each row attends to its own
/// keys only; only a row's real tokens are written, and padding queries see only their row's real keys.
/// Nothing is concatenated or reallocated per step: new keys/values are scattered into the slots (one
/// <c>index_put_</c> per layer and tensor; a decode step's one token per row is one <c>index_copy_</c> of its B·H rows
/// into the slab seen as a matrix, with its positions and mask built on the host), and attention reads the slots in place when the batch's rows are
/// consecutive slots (the scheduler rents the lowest free slot to keep them so), else one gather of the used length.
/// </summary>
public sealed unsafe class BatchKvCache : KvCache
{
    readonly long[] _len;
    readonly SortedSet<int> _free;
    int[] _rows = [];
    long[] _counts = [];
    long _t, _keys;
    int _firstRow = -1;                                  // ≥ 0: rows are slots _firstRow.. consecutively (read in place)
    int _readRows;                                       // rows whose keys Append returns (all, or a mixed forward's decode rows)
    // A mixed forward's prompt chunks after its decode rows: slot, tokens already cached, tokens brought, offset in the
    // forward's sequence, and the chunk's mask over its slot's keys (null: nothing cached before it, plain causal).
    (int Slot, long Start, long N, long Offset, Tensor? Mask)[]? _chunks;
    long[] _decodeKeys = [];                             // a decode step's keys per row (its length + the new token)
    int[] _decodeSlots = [];                             // a decode step's slot per row (DecodeAttention reads them)
    long[] _flat = [];                                   // a decode step's write rows (slot, head, position) of the flat slab
    bool _decode;                                        // Begin set up a decode step (or a mixed forward's decode rows)
    Tensor? _rowIndex, _positions, _mask, _writeRows, _writePos, _realQueries, _writeFlat;
    readonly Tensor[] _kFlat, _vFlat;                    // per layer, the slab as [slots·H_kv·context, hd] (views)

    public BatchKvCache(ModelConfig c, int slots, Device device, ScalarType dtype) : base(c, slots, device, dtype)
    {
        _len = new long[slots];
        _free = new SortedSet<int>(Enumerable.Range(0, slots));
        _kFlat = _k.Select(k => k.view(-1, k.shape[3])).ToArray();
        _vFlat = _v.Select(v => v.view(-1, v.shape[3])).ToArray();
    }

    public int Slots => _len.Length;
    /// <summary>Time the key/value writes of each forward (<see cref="TakeWriteTicks"/>), for the scheduler's profile.</summary>
    public bool TimeWrites { get; set; }
    long _writeTicks;

    /// <summary>Stopwatch ticks spent writing keys/values since the last call (0 unless <see cref="TimeWrites"/>).</summary>
    public long TakeWriteTicks() { long t = _writeTicks; _writeTicks = 0; return t; }
    public int FreeSlots => _free.Count;

    /// <summary>The lowest free slot (length 0), or -1 when all are in use. Lowest-first keeps a batch's slots consecutive.</summary>
    public int Rent()
    {
        if (_free.Count == 0) return -1;
        int s = _free.Min;
        _free.Remove(s);
        return s;
    }

    public void Release(int slot) { _len[slot] = 0; _free.Add(slot); }

    /// <summary>
    /// Moves a slot's keys/values and length to the free slot <paramref name="to"/> and frees <paramref name="from"/>:
    /// the scheduler fills the hole a finished sequence leaves with its highest slot, once per finished sequence, so
    /// the running batch stays in consecutive slots that attention reads in place at every step.
    /// </summary>
    public void Move(int from, int to)
    {
        if (!_free.Remove(to)) throw new InvalidOperationException($"KV cache slot {to} is in use");
        long n = _len[from];
        if (n > 0 && DecodeAttention.CanCopySlots(_k[0]))
            for (int l = 0; l < _k.Length; l++) { DecodeAttention.CopySlot(_k[l], from, to, n); DecodeAttention.CopySlot(_v[l], from, to, n); }
        else using (no_grad())
            for (int l = 0; l < _k.Length && n > 0; l++)
            {
                var (k, v) = View(l, from, 0, n);
                var (kd, vd) = View(l, to, 0, n);
                using (k) using (v) using (kd) using (vd) { kd.copy_(k); vd.copy_(v); }
            }
        _len[to] = n;
        Release(from);
    }

    /// <summary>Tokens cached in <paramref name="slot"/>.</summary>
    public long LengthOf(int slot) => _len[slot];

    /// <summary>Per layer [H_kv, n, hd] views of keys and values at <paramref name="start"/>..start+n of a slot (to copy out).</summary>
    public (Tensor K, Tensor V) View(int layer, int slot, long start, long n) =>
        (_k[layer][slot].narrow(1, start, n), _v[layer][slot].narrow(1, start, n));

    /// <summary>Elements of one layer's keys for <paramref name="tokens"/> tokens of one slot (H_kv × tokens × hd).</summary>
    public long BlockElements(long tokens) => _k[0].shape[1] * tokens * _k[0].shape[3];
    public long ElementSize => _k[0].ElementSize;

    /// <summary>Writes keys/values [H_kv, n, hd] of one layer at <paramref name="start"/> of a slot (a prefix-cache hit).</summary>
    public void Write(int layer, int slot, long start, Tensor k, Tensor v)
    {
        using (no_grad())
        {
            using var kd = _k[layer][slot].narrow(1, start, k.shape[1]);
            using var vd = _v[layer][slot].narrow(1, start, v.shape[1]);
            kd.copy_(k);
            vd.copy_(v);
        }
    }

    /// <summary>Sets a slot's length after <see cref="Write"/> filled it (a prefix-cache hit of <paramref name="length"/> tokens).</summary>
    public void SetLength(int slot, long length)
    {
        if (length < 0 || length > Capacity) throw new ArgumentOutOfRangeException(nameof(length));
        _len[slot] = length;
    }

    /// <summary>The next forward covers <paramref name="slots"/> (row i = slots[i]), each with <paramref name="t"/> new tokens.</summary>
    public void Begin(IReadOnlyList<int> slots, long t) => Begin(slots, slots.Select(_ => t).ToArray());

    /// <summary>
    /// The next forward covers <paramref name="slots"/> (row i = slots[i]) with input [B, T], T = max(counts): row i
    /// brings counts[i] ≥ 1 real tokens followed by padding (whose outputs are to be ignored).
    /// </summary>
    public void Begin(IReadOnlyList<int> slots, IReadOnlyList<long> counts)
    {
        End();
        if (slots.Count == 0 || slots.Count != counts.Count) throw new ArgumentException("one count per slot, at least one slot");
        _rows = slots.ToArray();
        _counts = counts.ToArray();
        int b = _rows.Length;
        _tokens = b * _counts.Max();
        _t = _counts.Max();
        _keys = 0;
        bool consecutive = true;
        for (int i = 0; i < b; i++)
        {
            int s = _rows[i];
            if (_counts[i] < 1) throw new ArgumentException($"row {i}: {_counts[i]} new tokens, expected ≥ 1");
            if (_len[s] + _counts[i] > Capacity) throw new InvalidOperationException($"KV cache slot {s} full: {_len[s]} + {_counts[i]} > context {Capacity}");
            _keys = Math.Max(_keys, _len[s] + _counts[i]);
            consecutive &= s == _rows[0] + i;
        }
        _firstRow = consecutive ? _rows[0] : -1;
        _readRows = b;
        if (_t == 1) { BeginDecode(); return; }
        using var scope = NewDisposeScope();
        var starts = tensor(_rows.Select(s => _len[s]).ToArray(), device: _device);                 // [B]
        var rows = tensor(_rows.Select(s => (long)s).ToArray(), device: _device);                    // [B]
        var keys = arange(_keys, dtype: ScalarType.Int64, device: _device);                           // [K]
        var count = tensor(_counts, device: _device);                                                // [B]
        var steps = arange(_t, dtype: ScalarType.Int64, device: _device);                             // [T]
        var real = steps.unsqueeze(0) < count.unsqueeze(1);                                           // [B, T]
        // A padding query takes its row's last real position: it stays inside the context and sees only real keys.
        var pos = starts.unsqueeze(1) + minimum(steps.unsqueeze(0), (count - 1).unsqueeze(1));      // [B, T]
        // Where the real tokens go: (slot, position) pairs, row-major — the order of k[real] in Append.
        _writeRows = rows.unsqueeze(1).expand(b, _t).masked_select(real).DetachFromDisposeScope();   // [N]
        _writePos = pos.masked_select(real).DetachFromDisposeScope();                                // [N]
        _realQueries = real.DetachFromDisposeScope();
        _mask = (keys.view(1, 1, 1, -1) <= pos.view(b, 1, _t, 1)).DetachFromDisposeScope();         // [B, 1, T, K]
        _positions = pos.DetachFromDisposeScope();
        if (_firstRow < 0) _rowIndex = rows.DetachFromDisposeScope();
    }

    /// <summary>
    /// A decode step (one token per row): positions and write targets are computed on the host; the positions are the
    /// only tensor made here. The write index, the additive mask (0 = may attend, -inf = not) and the gather index of
    /// non-consecutive rows are built only when a path needs them (<see cref="AttendDecode"/>'s SDPA fallback, or
    /// <see cref="Mask"/>): the C# path (<see cref="DecodeAttention"/>) writes and reads the slab with plain loops.
    /// </summary>
    void BeginDecode()
    {
        int b = _rows.Length;
        var starts = new long[b];
        long heads = _k[0].shape[1], context = _k[0].shape[2];
        _flat = new long[b * heads];
        _decodeKeys = new long[b];
        _decodeSlots = new int[b];
        for (int i = 0; i < b; i++)
        {
            starts[i] = _len[_rows[i]];
            _decodeKeys[i] = starts[i] + 1;
            _decodeSlots[i] = _rows[i];
            for (long h = 0; h < heads; h++) _flat[i * heads + h] = (_rows[i] * heads + h) * context + starts[i];   // row (slot, head, position) of the flat slab
        }
        _decode = true;
        // Owned by this cache until End (not by the caller's dispose scope).
        _positions = tensor(starts, [b, 1], device: _device).DetachFromDisposeScope();                 // [B, 1]
    }

    /// <summary>The decode step's additive mask [B, 1, 1, K] in the cache's dtype (SDPA wants q's), built on first use.</summary>
    Tensor DecodeMask()
    {
        if (_mask is not null) return _mask;
        int b = _readRows;
        var mask = new float[b * _keys];
        Array.Fill(mask, float.NegativeInfinity);
        for (int i = 0; i < b; i++) mask.AsSpan(i * (int)_keys, (int)_decodeKeys[i]).Fill(0);          // keys 0..start: its own, up to itself
        using var scope = NewDisposeScope();
        var additive = tensor(mask, [b, 1, 1, _keys], device: _device);
        if (additive.dtype != _k[0].dtype) additive = additive.to(_k[0].dtype);
        return _mask = additive.DetachFromDisposeScope();
    }

    /// <summary>
    /// The next forward is ONE sequence of N = D + Σ n tokens, input [1, N] (chunked prefill mixed into a decode step, as
    /// vLLM's scheduler does): first the next token of each of the D <paramref name="decodeSlots"/>, then each prompt
    /// chunk's n tokens for its slot. Linear layers run over the N tokens at once; <see cref="Attend"/> splits them again:
    /// the decode rows attend as a decode step does (in place, additive mask), each chunk over its own slot's keys.
    /// </summary>
    public void BeginMixed(IReadOnlyList<int> decodeSlots, IReadOnlyList<(int Slot, long N)> chunks)
    {
        End();
        if (chunks.Count == 0) throw new ArgumentException("a mixed forward needs at least one prompt chunk");
        int d = decodeSlots.Count;
        _readRows = d;
        _tokens = d + chunks.Sum(c => c.N);
        var positions = new List<long>();
        if (d > 0)
        {
            _rows = decodeSlots.ToArray();
            _keys = 0;
            bool consecutive = true;
            for (int i = 0; i < d; i++)
            {
                int s = _rows[i];
                if (_len[s] + 1 > Capacity) throw new InvalidOperationException($"KV cache slot {s} full: {_len[s]} + 1 > context {Capacity}");
                _keys = Math.Max(_keys, _len[s] + 1);
                consecutive &= s == _rows[0] + i;
                positions.Add(_len[s]);
            }
            _firstRow = consecutive ? _rows[0] : -1;
            _readRows = d;
            BeginDecode();                                                    // the decode rows' write targets, mask, gather
            _positions!.Dispose();
        }
        var list = new (int, long, long, long, Tensor?)[chunks.Count];
        long offset = d;
        for (int j = 0; j < chunks.Count; j++)
        {
            var (slot, n) = chunks[j];
            long start = _len[slot];
            if (n < 1) throw new ArgumentException($"chunk {j}: {n} new tokens, expected ≥ 1");
            if (start + n > Capacity) throw new InvalidOperationException($"KV cache slot {slot} full: {start} + {n} > context {Capacity}");
            for (long i = 0; i < n; i++) positions.Add(start + i);
            // Query i (position start + i) sees keys 0 .. start + i of its slot.
            var mask = start == 0 ? null : ones(n, start + n, dtype: ScalarType.Bool, device: _device).tril(start).view(1, 1, n, start + n).DetachFromDisposeScope();
            list[j] = (slot, start, n, offset, mask);
            offset += n;
        }
        _chunks = list;
        _rows = [.. decodeSlots, .. chunks.Select(c => c.Slot)];
        _counts = [.. decodeSlots.Select(_ => 1L), .. chunks.Select(c => c.N)];
        _t = offset;
        _positions = tensor(positions.ToArray(), [1, offset], device: _device).DetachFromDisposeScope();   // [1, N]
    }

    /// <summary>Drops the per-forward tensors (also done by the next <see cref="Begin(IReadOnlyList{int}, IReadOnlyList{long})"/>).</summary>
    public void End()
    {
        foreach (var t in new[] { _rowIndex, _positions, _mask, _writeRows, _writePos, _realQueries, _writeFlat }) t?.Dispose();
        _rowIndex = _positions = _mask = _writeRows = _writePos = _realQueries = _writeFlat = null;
        _decode = false;
        _tokens = 0;
        if (_chunks is not null) foreach (var c in _chunks) c.Mask?.Dispose();
        _chunks = null;
    }

    /// <summary>
    /// In a mixed forward (<see cref="BeginMixed"/>): q [1, H, N, hd], k, v [1, H_kv, N, hd] split into the decode rows,
    /// attended as a decode step's [D, H, 1, hd], and each prompt chunk, written into its slot and attended over it; the
    /// parts are put back in the forward's order. Otherwise the usual write-then-masked-attention.
    /// </summary>
    public override Tensor Attend(int layer, Tensor q, Tensor k, Tensor v)
    {
        if (_chunks is null) return _decode ? AttendDecode(layer, q, k, v) : base.Attend(layer, q, k, v);
        var parts = new List<Tensor>(_chunks.Length + 1);
        if (_readRows > 0 && _decode)
        {
            long d = _readRows;
            var qd = q.narrow(2, 0, d).transpose(0, 2);                                                            // [D, H, 1, hd]
            parts.Add(AttendDecode(layer, qd, k.narrow(2, 0, d).transpose(0, 2), v.narrow(2, 0, d).transpose(0, 2)).transpose(0, 2));   // [1, H, D, hd]
        }
        foreach (var (slot, start, n, offset, mask) in _chunks)
        {
            using (no_grad())
            {
                _k[layer][slot].narrow(1, start, n).copy_(k[0].narrow(1, offset, n));
                _v[layer][slot].narrow(1, start, n).copy_(v[0].narrow(1, offset, n));
            }
            var keys = _k[layer].narrow(0, slot, 1).narrow(2, 0, start + n);                                    // [1, H_kv, start + n, hd]
            var values = _v[layer].narrow(0, slot, 1).narrow(2, 0, start + n);
            parts.Add(CausalLM.Attend(q.narrow(2, offset, n), keys, values, mask));                              // [1, H, n, hd]
        }
        return parts.Count == 1 ? parts[0] : cat(parts, 2);
    }

    public override Tensor Positions(long t) =>
        t == _t && _positions is not null ? _positions : throw new InvalidOperationException($"BatchKvCache.Begin must precede the forward, for its {t} tokens (was called for {_t})");

    /// <summary>[B, 1, T, K]: each row sees its own keys up to its own position (a row's padding beyond its length never); boolean, or additive in a decode step.</summary>
    public override Tensor? Mask(long t)
    {
        Positions(t);                           // checks Begin covered this forward
        return _decode ? DecodeMask() : _mask;
    }

    /// <summary>
    /// Decode rows' attention: q [D, H, 1, hd], k, v [D, H_kv, 1, hd] written to the slots, then
    /// <see cref="DecodeAttention"/> over each row's own keys where it applies (<see cref="FastDecode"/>, float32 CPU),
    /// else SDPA with the step's additive mask.
    /// </summary>
    Tensor AttendDecode(int layer, Tensor q, Tensor k, Tensor v)
    {
        if (FastDecode && DecodeAttention.Supported(q, _k[layer]) && DecodeAttention.Supported(k, _k[layer]) && DecodeAttention.Supported(v, _v[layer]))
        {
            long t0 = TimeWrites ? System.Diagnostics.Stopwatch.GetTimestamp() : 0;
            DecodeAttention.Write(k, _k[layer], _flat);
            DecodeAttention.Write(v, _v[layer], _flat);
            if (TimeWrites) _writeTicks += System.Diagnostics.Stopwatch.GetTimestamp() - t0;
            return DecodeAttention.Run(q, _k[layer], _v[layer], _decodeSlots, _decodeKeys);
        }
        var (keys, values) = Append(layer, k, v);
        return CausalLM.Attend(q, keys, values, DecodeMask());
    }

    /// <summary>
    /// A decode step (not a mixed forward) on the C# path reads q, k, v straight out of GPT-2's qkv [B, 1, 3·d] and
    /// returns [B, 1, d]: none of the split/view/transpose/contiguous ops around attention (9 per layer, a fixed cost
    /// every step pays whatever its batch). Otherwise the split path.
    /// </summary>
    public override Tensor AttendPacked(int layer, Tensor qkv, long hd)
    {
        if (!(_decode && _chunks is null && FastDecode && PackedDecode && DecodeAttention.SupportedPacked(qkv, _k[layer], hd)))
            return base.AttendPacked(layer, qkv, hd);
        long t0 = TimeWrites ? System.Diagnostics.Stopwatch.GetTimestamp() : 0;
        DecodeAttention.WritePacked(qkv, _k[layer], _v[layer], hd, _flat);
        if (TimeWrites) _writeTicks += System.Diagnostics.Stopwatch.GetTimestamp() - t0;
        return DecodeAttention.RunPacked(qkv, _k[layer], _v[layer], hd, _decodeSlots, _decodeKeys);
    }

    readonly Dictionary<TorchSharp.Modules.Linear, PackedLinear> _packed = new(ReferenceEqualityComparer.Instance);

    /// <summary>
    /// Copies these projections' weights into <see cref="PackedLinear"/>s, which then compute them for forwards of at
    /// most <see cref="PackedLinear.MaxRows"/> tokens (decode steps, small mixed ones). Only for weights that stay as
    /// they are while this cache serves (the scheduler's model); float32 CPU ones (others are skipped).
    /// </summary>
    public void Pack(IEnumerable<TorchSharp.Modules.Linear> linears)
    {
        foreach (var l in linears)
            if (l.weight is { } w && w.device_type == DeviceType.CPU && w.dtype == ScalarType.Float32 && !_packed.ContainsKey(l))
                _packed[l] = new PackedLinear(l);
    }

    /// <summary>
    /// <see cref="Pack"/>s a GPT-2 model's four projections per block when it has at most
    /// <see cref="PackedLinear.MaxModelParameters"/> (a model the size of gpt2, 124M, stays on libtorch's kernels, whose
    /// blocking pays at its shapes, and would double its projections' memory). True when it packed.
    /// </summary>
    public bool PackProjections(CausalLM model)
    {
        if (model is not Gpt2 g || model.parameters().Sum(p => p.NumberOfElements) > PackedLinear.MaxModelParameters) return false;
        Pack(g.h.SelectMany(b => b.mlp is null ? [b.attn.c_attn, b.attn.c_proj] : new[] { b.attn.c_attn, b.attn.c_proj, b.mlp.c_fc, b.mlp.c_proj }));
        if (_decoder is null && Gpt2Decoder.Takes(g) && g.h.All(b => b.mlp is not null && _packed.ContainsKey(b.mlp.c_fc)))
            _decoder = new Gpt2Decoder(g, l => _packed[l]);
        return _packed.Count > 0;
    }

    Gpt2Decoder? _decoder;

    /// <summary>
    /// Decode steps of ≤ <see cref="Gpt2Decoder.MaxRows"/> rows of a model <see cref="PackProjections"/> took run whole
    /// in C# (<see cref="Gpt2Decoder"/>, default); false: the model's layers through libtorch (the reference path, and
    /// bench/serve/decode-step.cs's A/B).
    /// </summary>
    public bool WholeStep { get; set; } = true;

    public override Tensor? WholeForward(Tensor idx)
    {
        int b = _rows.Length;
        if (!(_decode && _chunks is null && WholeStep && FastDecode && PackedLinears && _decoder is not null && b <= Gpt2Decoder.MaxRows
              && idx.dtype == ScalarType.Int64 && idx.device_type == DeviceType.CPU && idx.is_contiguous() && idx.dim() == 2 && idx.shape[0] == b && idx.shape[1] == 1 && !is_grad_enabled()))
            return null;
        var logits = empty(b, 1, _decoder.Vocab, dtype: ScalarType.Float32);
        _decoder.Step((long*)LibTorchLoader.DataPtr(idx), b, _decodeSlots, _decodeKeys, _flat, _k, _v, (float*)LibTorchLoader.DataPtr(logits));
        Advance(1);
        return logits;
    }

    /// <summary>Projections <see cref="Pack"/>ed use the C# loop (default); false: libtorch's linear (bench/serve/decode-step.cs A/B).</summary>
    public bool PackedLinears { get; set; } = true;

    // The forward's token count is known here: a long prompt chunk pays no per-projection checks (native calls) at all.
    public override Tensor Project(TorchSharp.Modules.Linear linear, Tensor x) =>
        PackedLinears && _tokens is >= PackedLinear.MinRows and <= PackedLinear.MaxRows && _packed.TryGetValue(linear, out var p) && p.Takes(x)
            ? p.Forward(x) : linear.call(x);

    long _tokens;                                        // tokens (rows × padded length) in the forward Begin set up

    /// <summary>With <see cref="FastDecode"/>: GPT-2's decode steps read q, k, v from the fused qkv (default); false: split into heads first (bench/serve/decode-step.cs A/B).</summary>
    public bool PackedDecode { get; set; } = true;

    /// <summary>Decode steps attend with <see cref="DecodeAttention"/> where it applies (default); false: always libtorch's SDPA (the reference path).</summary>
    public bool FastDecode { get; set; } = true;

    public override (Tensor K, Tensor V) Append(int layer, Tensor k, Tensor v)
    {
        if (_writeRows is null && !_decode) throw new InvalidOperationException("BatchKvCache.Begin must precede the forward");
        long t0 = TimeWrites ? System.Diagnostics.Stopwatch.GetTimestamp() : 0;
        using (no_grad())
        {
            if (_decode)
            {
                _writeFlat ??= tensor(_flat, device: _device).DetachFromDisposeScope();                      // [B·H_kv]
                // Decode: k, v [B, H, 1, hd] as B·H rows copied into the flat slab (index_copy_ costs a fraction of index_put_).
                using var kr = k.reshape(-1, k.shape[3]);
                using var vr = v.reshape(-1, v.shape[3]);
                _kFlat[layer].index_copy_(0, _writeFlat, kr);
                _vFlat[layer].index_copy_(0, _writeFlat, vr);
            }
            else
            {
                // k, v [B, H, T, hd] → the real tokens' [N, H, hd], scattered to (slot, position): one op per tensor.
                using var kt = k.transpose(1, 2);                                                          // [B, T, H, hd]
                using var vt = v.transpose(1, 2);
                using var kr = kt[_realQueries!];
                using var vr = vt[_realQueries!];
                _k[layer].index_put_(kr, TensorIndex.Tensor(_writeRows!), TensorIndex.Colon, TensorIndex.Tensor(_writePos!));
                _v[layer].index_put_(vr, TensorIndex.Tensor(_writeRows!), TensorIndex.Colon, TensorIndex.Tensor(_writePos!));
            }
        }
        if (TimeWrites) _writeTicks += System.Diagnostics.Stopwatch.GetTimestamp() - t0;
        if (_firstRow >= 0)                                                                            // in place: no copy
            return (_k[layer].narrow(0, _firstRow, _readRows).narrow(2, 0, _keys), _v[layer].narrow(0, _firstRow, _readRows).narrow(2, 0, _keys));
        _rowIndex ??= tensor(_rows.AsSpan(0, _readRows).ToArray().Select(r => (long)r).ToArray(), device: _device).DetachFromDisposeScope();
        return (_k[layer].narrow(2, 0, _keys).index_select(0, _rowIndex), _v[layer].narrow(2, 0, _keys).index_select(0, _rowIndex));
    }

    public override void Advance(long tokens)
    {
        // Each row advances by its own real tokens (the model passes T, the padded length).
        for (int i = 0; i < _rows.Length; i++) _len[_rows[i]] += _counts[i];
    }

    public override void Dispose()
    {
        End();
        foreach (var t in _kFlat.Concat(_vFlat)) t.Dispose();
        _decoder?.Dispose();
        foreach (var p in _packed.Values) p.Dispose();
        _packed.Clear();
        base.Dispose();
    }
}
