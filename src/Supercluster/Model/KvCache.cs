using TorchSharp;
using static TorchSharp.torch;

namespace Supercluster.Model;

/// <summary>
/// What a forward's attention needs besides q, k, v: where the new tokens sit (<see cref="Positions"/>), which keys
/// each may see (<see cref="Mask"/>), and the keys/values of earlier tokens (<see cref="Append"/>). The model has one
/// attention path and gets all three from here, whether it is training (<see cref="None"/>: nothing cached), decoding
/// one sequence (this class: keys and values of every layer preallocated to the context length, so each step attends
/// over the cache instead of recomputing the prefix) or decoding a batch of sequences at their own lengths
/// (Inference/BatchKvCache).
/// </summary>
public class KvCache : IDisposable
{
    protected readonly Tensor[] _k, _v; // per layer [B, n_kv_head, seq_len, head_dim]
    private protected readonly Device _device;
    (long Start, long T, Tensor Positions, Tensor? Mask)? _step;     // this forward's positions and mask, made once for all layers

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
        _device = device;
    }

    /// <summary>A cache that stores nothing (training, embeddings): tokens at 0..T-1, plain causal attention.</summary>
    public static KvCache None(Device device) => new NoKvCache(device);

    private protected KvCache(Device device) { _k = _v = []; _device = device; }

    /// <summary>Tokens already in the cache (the position of the next token).</summary>
    public long Length { get; private set; }
    public long Capacity { get; private protected init; }

    /// <summary>Positions [B or 1, T] of this forward's <paramref name="t"/> new tokens (int64, on the cache's device).</summary>
    public virtual Tensor Positions(long t) => Step(t).Positions;

    /// <summary>
    /// Mask [B or 1, 1, T, T_keys] over the keys, boolean (true = may attend) or additive in the model's dtype (0 = may
    /// attend, -inf = not; the form SDPA computes with) over the keys <see cref="Append"/> returns, or null when those
    /// keys are exactly this forward's T tokens, so attention is plain causal (and SDPA may use its causal kernels).
    /// </summary>
    public virtual Tensor? Mask(long t) => Step(t).Mask;

    (long Start, long T, Tensor Positions, Tensor? Mask) Step(long t)
    {
        if (_step is { } s && s.Start == Length && s.T == t) return s;
        DropStep();
        using var scope = NewDisposeScope();
        var pos = arange(Length, Length + t, dtype: ScalarType.Int64, device: _device);                        // [T]
        // Query i sits at position Length + i and sees keys 0..Length + i.
        Tensor? mask = Length == 0 ? null : ones(t, Length + t, dtype: ScalarType.Bool, device: _device).tril(Length).view(1, 1, t, Length + t);
        _step = (Length, t, pos.unsqueeze(0).DetachFromDisposeScope(), mask?.DetachFromDisposeScope());
        return _step.Value;
    }

    void DropStep()
    {
        if (_step is { } s) { s.Positions.Dispose(); s.Mask?.Dispose(); }
        _step = null;
    }

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

    /// <summary>
    /// Attention of this forward's q [B, H, T, hd] over the cached keys/values plus its own k, v [B, H_kv, T, hd]
    /// (written to the cache): [B, H, T, hd]. By default <see cref="Append"/>, then <see cref="Mask"/>ed attention (key/value
    /// heads repeated for grouped-query attention); a cache that lays a forward's tokens out otherwise (Inference/BatchKvCache's
    /// mixed prefill + decode forward: rows of different lengths side by side in one [1, N] sequence) attends its own way.
    /// </summary>
    public virtual Tensor Attend(int layer, Tensor q, Tensor k, Tensor v)
    {
        (k, v) = Append(layer, k, v);                                                  // [B, H_kv, T_all, hd]
        return CausalLM.Attend(q, k, v, Mask(q.shape[2]));
    }

    /// <summary>
    /// Attention from GPT-2's fused projection qkv [B, T, 3·d] (q, k, v side by side, heads of <paramref name="hd"/>):
    /// the heads' outputs re-assembled, [B, T, d]. By default split into q, k, v [B, H, T, hd] and <see cref="Attend"/>;
    /// a cache may read the three straight from qkv (Inference/BatchKvCache's decode step) and skip those views.
    /// </summary>
    public virtual Tensor AttendPacked(int layer, Tensor qkv, long hd)
    {
        long b = qkv.shape[0], t = qkv.shape[1];
        var qkvs = qkv.split(qkv.shape[2] / 3, dim: 2);                        // 3 × [B, T, d]
        var q = qkvs[0].view(b, t, -1, hd).transpose(1, 2);                    // [B, H, T, hd]
        var k = qkvs[1].view(b, t, -1, hd).transpose(1, 2);
        var v = qkvs[2].view(b, t, -1, hd).transpose(1, 2);
        var y = Attend(layer, q, k, v);                                        // [B, H, T, hd] over the cached and new keys
        return y.transpose(1, 2).contiguous().view(b, t, -1);                  // re-assemble heads
    }

    /// <summary>
    /// A projection of this forward's activations through <paramref name="linear"/> (GPT-2's four per block): by default
    /// the module itself; a cache that holds the model's weights laid out for few rows (Inference/BatchKvCache with
    /// PackedLinear, the scheduler's) may compute it there.
    /// </summary>
    public virtual Tensor Project(TorchSharp.Modules.Linear linear, Tensor x) => linear.call(x);

    /// <summary>
    /// The logits [B, T, vocab] of a forward the cache computes whole by itself (Inference/BatchKvCache's C# decode step
    /// of a small GPT-2; it advances itself), or null: the model's layers run, through the hooks above. Default null.
    /// </summary>
    public virtual Tensor? WholeForward(Tensor idx) => null;

    /// <summary>Called once per forward after every layer appended.</summary>
    public virtual void Advance(long tokens) => Length += tokens;

    public virtual void Dispose()
    {
        DropStep();
        foreach (var t in _k) t.Dispose();
        foreach (var t in _v) t.Dispose();
    }

    /// <summary>
    /// Nothing cached: positions 0..T-1, causal mask, keys pass through. One is made per forward; its positions are made
    /// once, in the caller's dispose scope.
    /// </summary>
    sealed class NoKvCache(Device device) : KvCache(device)
    {
        Tensor? _positions;

        public override Tensor Positions(long t) =>                                                                      // [1, T]
            _positions is { } p && p.shape[1] == t ? p : _positions = arange(t, dtype: ScalarType.Int64, device: _device).unsqueeze(0);
        public override Tensor? Mask(long t) => null;
        public override (Tensor K, Tensor V) Append(int layer, Tensor k, Tensor v) => (k, v);
        public override void Advance(long tokens) { }
    }
}
