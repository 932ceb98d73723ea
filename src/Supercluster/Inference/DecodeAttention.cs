using System.Runtime.Intrinsics;
using Supercluster.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace Supercluster.Inference;

/// <summary>
/// Attention of a decode step (one query per row) over the rows' own cache slots, on the CPU in float32, as one loop
/// in C# over rows and heads: scores q·k/√hd over the row's first keys, softmax, the weighted sum of values. libtorch's
/// SDPA does the same with a masked [B, H, 1, keys] problem split into a small matrix product per row and head, whose
/// call overhead, not the arithmetic, is most of a small model's attention time at batch 16 (docs/serving.md).
/// The result equals SDPA with the decode step's mask to float rounding (Inference/DecodeAttentionTests).
/// </summary>
public static unsafe class DecodeAttention
{
    /// <summary>Whether <see cref="Run"/> handles this case: float32 on the CPU, contiguous slabs, head size a multiple of 8, 256-bit vectors.</summary>
    public static bool Supported(Tensor q, Tensor kSlab) =>
        q.device_type == DeviceType.CPU && q.dtype == ScalarType.Float32 && kSlab.dtype == ScalarType.Float32 && kSlab.is_contiguous()
        && q.shape[3] % 8 == 0 && q.stride(3) == 1 && Vector256.IsHardwareAccelerated;

    /// <summary>
    /// A decode step's new keys (or values) x [B, H_kv, 1, hd] (any strides, last dimension contiguous, float32) into the
    /// slab [slots, H_kv, context, hd] seen as rows of hd: row b·H_kv + h goes to slab row <paramref name="rows"/>[b·H_kv + h].
    /// The same as <c>slab.view(-1, hd).index_copy_(0, rows, x.reshape(-1, hd))</c> (a copy, so bit for bit), without
    /// the reshape's copy, the index tensor and the op's dispatch, per layer and tensor.
    /// </summary>
    public static void Write(Tensor x, Tensor slab, long[] rows) =>
        Write((float*)LibTorchLoader.DataPtr(x), x.shape[0], x.shape[1], x.stride(0), x.stride(1), x.shape[3], slab, rows);

    static void Write(float* xp, long b, long h, long xb, long xh, long hd, Tensor slab, long[] rows) =>
        Write(xp, b, h, xb, xh, hd, (float*)LibTorchLoader.DataPtr(slab), slab.NumberOfElements / hd, rows);

    /// <summary>The same into a slab of <paramref name="limit"/> rows of hd at sp (<see cref="Gpt2Decoder"/>'s step).</summary>
    internal static void Write(float* xp, long b, long h, long xb, long xh, long hd, float* sp, long limit, long[] rows)
    {
        if (rows.Length != b * h) throw new ArgumentException($"{rows.Length} write rows for {b}×{h} key rows");
        long bytes = hd * sizeof(float);
        for (long i = 0; i < b; i++)
            for (long j = 0; j < h; j++)
            {
                long r = rows[i * h + j];
                if ((ulong)r >= (ulong)limit) throw new ArgumentOutOfRangeException(nameof(rows), $"slab row {r} outside 0..{limit - 1}");
                Buffer.MemoryCopy(xp + i * xb + j * xh, sp + r * hd, bytes, bytes);
            }
    }

    /// <summary>Whether <see cref="CopySlot"/> can copy within this slab: float32 on the CPU, contiguous.</summary>
    public static bool CanCopySlots(Tensor slab) => slab.device_type == DeviceType.CPU && slab.dtype == ScalarType.Float32 && slab.is_contiguous();

    /// <summary>
    /// The first <paramref name="n"/> positions of every head of slot <paramref name="from"/> to slot <paramref name="to"/>
    /// in a slab [slots, H_kv, context, hd] (a finished sequence's hole filled, <see cref="BatchKvCache.Move"/>): one
    /// memory copy per head instead of a dozen view and copy ops per layer.
    /// </summary>
    public static void CopySlot(Tensor slab, int from, int to, long n)
    {
        long slots = slab.shape[0], h = slab.shape[1], context = slab.shape[2], hd = slab.shape[3];
        if ((ulong)from >= (ulong)slots || (ulong)to >= (ulong)slots || n < 0 || n > context)
            throw new ArgumentOutOfRangeException(nameof(n), $"slots {from} → {to} of {slots}, {n} positions of {context}");
        float* p = (float*)LibTorchLoader.DataPtr(slab);
        long bytes = n * hd * sizeof(float);
        for (long j = 0; j < h; j++)
            Buffer.MemoryCopy(p + ((from * h + j) * context) * hd, p + ((to * h + j) * context) * hd, bytes, bytes);
    }

    /// <summary>
    /// Whether <see cref="WritePacked"/> and <see cref="RunPacked"/> take this decode step: qkv [B, 1, 3·H·hd] float32
    /// on the CPU with unit stride along the last dimension, as many key/value heads as query heads (GPT-2), and what
    /// <see cref="Supported"/> asks of the slab.
    /// </summary>
    public static bool SupportedPacked(Tensor qkv, Tensor kSlab, long hd) =>
        qkv.device_type == DeviceType.CPU && qkv.dtype == ScalarType.Float32 && kSlab.dtype == ScalarType.Float32 && kSlab.is_contiguous()
        && qkv.dim() == 3 && qkv.shape[1] == 1 && qkv.stride(2) == 1 && hd % 8 == 0 && kSlab.shape[3] == hd
        && qkv.shape[2] == 3 * kSlab.shape[1] * hd && Vector256.IsHardwareAccelerated;

    /// <summary>The k and v thirds of qkv [B, 1, 3·d] into their slabs at <paramref name="rows"/> (as <see cref="Write(Tensor, Tensor, long[])"/>).</summary>
    public static void WritePacked(Tensor qkv, Tensor kSlab, Tensor vSlab, long hd, long[] rows)
    {
        long b = qkv.shape[0], d = qkv.shape[2] / 3, h = d / hd;
        float* p = (float*)LibTorchLoader.DataPtr(qkv);
        Write(p + d, b, h, qkv.stride(0), hd, hd, kSlab, rows);
        Write(p + 2 * d, b, h, qkv.stride(0), hd, hd, vSlab, rows);
    }

    /// <summary>
    /// <see cref="Run"/> with q read from the first third of qkv [B, 1, 3·d]; returns the heads side by side, [B, 1, d]
    /// (what the output projection takes).
    /// </summary>
    public static Tensor RunPacked(Tensor qkv, Tensor kSlab, Tensor vSlab, long hd, int[] slots, long[] keys)
    {
        long b = qkv.shape[0], d = qkv.shape[2] / 3;
        var output = empty(b, 1, d, dtype: ScalarType.Float32);
        Attend((float*)LibTorchLoader.DataPtr(qkv), qkv.stride(0), hd, b, d / hd, hd, kSlab, vSlab, slots, keys, (float*)LibTorchLoader.DataPtr(output));
        return output;
    }

    /// <summary>
    /// q [B, H, 1, hd] (any strides, last dimension contiguous); slabs [slots, H_kv, context, hd] contiguous; row i attends
    /// over keys 0 .. keys[i]−1 of slot slots[i] (query heads share key/value heads in groups of H / H_kv). Returns [B, H, 1, hd].
    /// </summary>
    public static Tensor Run(Tensor q, Tensor kSlab, Tensor vSlab, int[] slots, long[] keys)
    {
        var output = empty(q.shape[0], 1, q.shape[1], q.shape[3], dtype: ScalarType.Float32);   // [B, 1, H, hd]: the model's next layout
        Attend((float*)LibTorchLoader.DataPtr(q), q.stride(0), q.stride(1), q.shape[0], q.shape[1], q.shape[3], kSlab, vSlab, slots, keys,
            (float*)LibTorchLoader.DataPtr(output));
        return output.transpose(1, 2);                                                        // [B, H, 1, hd]
    }

    /// <summary>Row i, head j's query at qp + i·qb + j·qh; output row-major [B, H, hd] at op.</summary>
    static void Attend(float* qp, long qb, long qh, long b, long h, long hd, Tensor kSlab, Tensor vSlab, int[] slots, long[] keys, float* op) =>
        Attend(qp, qb, qh, b, h, hd, (float*)LibTorchLoader.DataPtr(kSlab), (float*)LibTorchLoader.DataPtr(vSlab), kSlab.shape[1], kSlab.shape[2], slots, keys, op);

    /// <summary>The same over slabs [slots, hkv, context, hd] at kp and vp (<see cref="Gpt2Decoder"/>'s step).</summary>
    internal static void Attend(float* qp, long qb, long qh, long b, long h, long hd, float* kp, float* vp, long hkv, long context, int[] slots, long[] keys, float* op)
    {
        long group = h / hkv;
        float scale = 1f / MathF.Sqrt(hd);
        long maxKeys = 0;
        foreach (long n in keys) maxKeys = Math.Max(maxKeys, n);
        float* scores = stackalloc float[(int)((maxKeys + 7) / 8 * 8)];
        for (int i = 0; i < b; i++)
        {
            long n = keys[i];
            if (n < 1 || n > context) throw new ArgumentOutOfRangeException(nameof(keys), $"row {i}: {n} keys, context {context}");
            for (long head = 0; head < h; head++)
            {
                float* qi = qp + i * qb + head * qh;
                long kv = ((long)slots[i] * hkv + head / group) * context * hd;
                float* kRow = kp + kv, vRow = vp + kv, o = op + (i * h + head) * hd;
                // Scores, four keys at a time (independent accumulators keep the FMA units busy), then their maximum.
                long k = 0;
                for (; k + 4 <= n; k += 4)
                {
                    float* k0 = kRow + k * hd;
                    Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
                    for (long j = 0; j < hd; j += 8)
                    {
                        var qv = Vector256.Load(qi + j);
                        a0 = Vector256.FusedMultiplyAdd(qv, Vector256.Load(k0 + j), a0);
                        a1 = Vector256.FusedMultiplyAdd(qv, Vector256.Load(k0 + hd + j), a1);
                        a2 = Vector256.FusedMultiplyAdd(qv, Vector256.Load(k0 + 2 * hd + j), a2);
                        a3 = Vector256.FusedMultiplyAdd(qv, Vector256.Load(k0 + 3 * hd + j), a3);
                    }
                    scores[k] = Vector256.Sum(a0) * scale;
                    scores[k + 1] = Vector256.Sum(a1) * scale;
                    scores[k + 2] = Vector256.Sum(a2) * scale;
                    scores[k + 3] = Vector256.Sum(a3) * scale;
                }
                for (; k < n; k++)
                {
                    var a = Vector256<float>.Zero;
                    for (long j = 0; j < hd; j += 8) a = Vector256.FusedMultiplyAdd(Vector256.Load(qi + j), Vector256.Load(kRow + k * hd + j), a);
                    scores[k] = Vector256.Sum(a) * scale;
                }
                long padded = (n + 7) / 8 * 8;
                for (k = n; k < padded; k++) scores[k] = float.NegativeInfinity;        // exp(−inf) = 0: the tail adds nothing
                var mv = Vector256.Create(float.NegativeInfinity);
                for (k = 0; k < padded; k += 8) mv = Vector256.Max(mv, Vector256.Load(scores + k));
                float max = float.NegativeInfinity;
                for (int l = 0; l < 8; l++) max = MathF.Max(max, mv[l]);
                // exp(s − max), eight at a time.
                var m = Vector256.Create(max);
                var total = Vector256<float>.Zero;
                for (k = 0; k < padded; k += 8)
                {
                    var e = Vector256.Exp(Vector256.Load(scores + k) - m);
                    e.Store(scores + k);
                    total += e;
                }
                var inv = Vector256.Create(1f / Vector256.Sum(total));
                // The weighted sum of values, eight dimensions at a time, four keys in flight.
                for (long j = 0; j < hd; j += 8)
                {
                    Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
                    float* v0 = vRow + j;
                    for (k = 0; k + 4 <= n; k += 4)
                    {
                        a0 = Vector256.FusedMultiplyAdd(Vector256.Create(scores[k]), Vector256.Load(v0 + k * hd), a0);
                        a1 = Vector256.FusedMultiplyAdd(Vector256.Create(scores[k + 1]), Vector256.Load(v0 + (k + 1) * hd), a1);
                        a2 = Vector256.FusedMultiplyAdd(Vector256.Create(scores[k + 2]), Vector256.Load(v0 + (k + 2) * hd), a2);
                        a3 = Vector256.FusedMultiplyAdd(Vector256.Create(scores[k + 3]), Vector256.Load(v0 + (k + 3) * hd), a3);
                    }
                    for (; k < n; k++) a0 = Vector256.FusedMultiplyAdd(Vector256.Create(scores[k]), Vector256.Load(v0 + k * hd), a0);
                    ((a0 + a1 + (a2 + a3)) * inv).Store(o + j);
                }
            }
        }
    }
}
