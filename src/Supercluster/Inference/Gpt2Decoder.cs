using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using Supercluster.Model;
using Supercluster.Runtime;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Supercluster.Inference;

/// <summary>
/// A small GPT-2's whole decode step (one new token per row) in C#, the libtorch forward as its reference (llm.c's
/// habit): embeddings, per block layer norm → qkv (<see cref="PackedLinear"/>) → key/value write and attention
/// (<see cref="DecodeAttention"/>) → output projection added into the residual in its store → layer norm → fc with
/// GELU → projection added into the residual, then the final norm and the tied head, all over a few rows held in
/// buffers reused from step to step. At `small`'s sizes a libtorch op costs more to dispatch than to compute, and the
/// forward is ~60 of them per step whatever its rows (docs/serving.md, "The 10× target"); here there are none.
/// Equal to the libtorch forward to float rounding (Inference/Gpt2DecoderTests).
/// </summary>
public sealed unsafe class Gpt2Decoder : IDisposable
{
    struct Layer
    {
        public float* Ln1W, Ln1B, Ln2W, Ln2B;
        public PackedLinear Attn, Proj, Fc, MlpProj;
    }

    readonly Layer[] _layers;
    readonly PackedLinear _head;                  // the token table [vocab, d] as a projection d → vocab (tied head)
    readonly List<nint> _owned = [];              // every buffer below, freed by Dispose
    readonly float* _wte, _wpe, _lnfW, _lnfB;
    readonly float* _x, _a, _qkv, _ff;            // activations [MaxRows, d | d | 3d | f], reused by every step
    readonly int _d, _heads, _hd, _f, _vocab, _context;
    readonly float _eps;

    /// <summary>Rows one step takes (those of <see cref="PackedLinear"/>, whose loop it runs).</summary>
    public const int MaxRows = PackedLinear.MaxRows;

    /// <summary>Whether a model of this kind can be decoded here: GPT-2 with dense blocks, float32 on the CPU, heads a multiple of 8, 512-bit vectors.</summary>
    public static bool Takes(CausalLM model) =>
        model is Gpt2 g && Vector512.IsHardwareAccelerated && g.h.All(b => b.mlp is not null)
        && g.Config.NKvHead == g.Config.NHead && g.Config.HeadDim % 8 == 0
        && g.parameters().All(p => p.device_type == DeviceType.CPU && p.dtype == ScalarType.Float32);

    /// <param name="packed">The block's projections as <see cref="PackedLinear"/>s (the cache's, so they are copied once).</param>
    public Gpt2Decoder(Gpt2 model, Func<Linear, PackedLinear> packed)
    {
        if (!Takes(model)) throw new ArgumentException("Gpt2Decoder takes a dense float32 CPU GPT-2 with heads a multiple of 8, on a CPU with 512-bit vectors");
        var c = model.Config;
        (_d, _heads, _hd, _f, _vocab, _context, _eps) = (c.NEmbd, c.NHead, c.HeadDim, c.FfnHidden, c.VocabSize, c.SeqLen, (float)c.NormEps);
        _wte = Copy(model.wte.weight!);
        _wpe = Copy(model.wpe.weight!);
        _lnfW = Copy(model.ln_f.weight!);
        _lnfB = Copy(model.ln_f.bias!);
        _layers = model.h.Select(b => new Layer
        {
            Ln1W = Copy(b.ln_1.weight!), Ln1B = Copy(b.ln_1.bias!), Ln2W = Copy(b.ln_2.weight!), Ln2B = Copy(b.ln_2.bias!),
            Attn = packed(b.attn.c_attn), Proj = packed(b.attn.c_proj), Fc = packed(b.mlp!.c_fc), MlpProj = packed(b.mlp.c_proj),
        }).ToArray();
        using (no_grad())
        using (var table = model.wte.weight!.narrow(0, 0, _vocab))              // the padded rows are cut from the logits anyway
            _head = new PackedLinear(table, null);
        _x = Alloc(MaxRows * _d);
        _a = Alloc(MaxRows * _d);
        _qkv = Alloc(MaxRows * 3 * _d);
        _ff = Alloc(MaxRows * _f);
    }

    /// <summary>Vocabulary size: the logits per row that <see cref="Step"/> writes.</summary>
    public int Vocab => _vocab;

    /// <summary>
    /// One decode step of <paramref name="rows"/> rows: row i's token ids[i] at position keys[i] − 1 of slot slots[i];
    /// its key and value of layer l go to rows writeRows[i·H + h] of kSlabs[l] / vSlabs[l] ([slots, H, context, hd]
    /// contiguous, float32) and it attends over that slot's first keys[i]. Logits [rows, vocab] go to
    /// <paramref name="logits"/>.
    /// </summary>
    public void Step(long* ids, int rows, int[] slots, long[] keys, long[] writeRows, Tensor[] kSlabs, Tensor[] vSlabs, float* logits)
    {
        if (rows < 1 || rows > MaxRows) throw new ArgumentOutOfRangeException(nameof(rows), $"{rows} rows, expected 1..{MaxRows}");
        if (kSlabs.Length != _layers.Length || vSlabs.Length != _layers.Length) throw new ArgumentException($"{kSlabs.Length} slabs for {_layers.Length} layers");
        int d = _d;
        for (int i = 0; i < rows; i++)
        {
            long id = ids[i], pos = keys[i] - 1;
            if ((ulong)id >= (ulong)_vocab) throw new ArgumentOutOfRangeException(nameof(ids), $"row {i}: token {id}, vocabulary {_vocab}");
            if ((ulong)pos >= (ulong)_context) throw new ArgumentOutOfRangeException(nameof(keys), $"row {i}: position {pos}, context {_context}");
            Add(_wte + id * d, _wpe + pos * d, _x + i * d, d);
        }
        for (int l = 0; l < _layers.Length; l++)
        {
            ref var L = ref _layers[l];
            var (k, v) = (kSlabs[l], vSlabs[l]);
            if (!k.is_contiguous() || !v.is_contiguous() || k.dtype != ScalarType.Float32 || v.dtype != ScalarType.Float32 || k.shape[1] != _heads || k.shape[3] != _hd)
                throw new ArgumentException($"layer {l}: the key/value slabs must be contiguous float32 [slots, {_heads}, context, {_hd}]");
            float* kp = (float*)LibTorchLoader.DataPtr(k), vp = (float*)LibTorchLoader.DataPtr(v);
            long slabRows = k.NumberOfElements / _hd, context = k.shape[2];
            Norm(_x, _a, rows, L.Ln1W, L.Ln1B);
            L.Attn.Run(_a, _qkv, rows);
            DecodeAttention.Write(_qkv + d, rows, _heads, 3 * d, _hd, _hd, kp, slabRows, writeRows);
            DecodeAttention.Write(_qkv + 2 * d, rows, _heads, 3 * d, _hd, _hd, vp, slabRows, writeRows);
            DecodeAttention.Attend(_qkv, 3 * d, _hd, rows, _heads, _hd, kp, vp, _heads, context, slots, keys, _a);
            L.Proj.Run(_a, _x, rows, add: true);                                // x += attn
            Norm(_x, _a, rows, L.Ln2W, L.Ln2B);
            L.Fc.Run(_a, _ff, rows);
            Gelu(_ff, rows * _f);
            L.MlpProj.Run(_ff, _x, rows, add: true);                            // x += mlp
        }
        Norm(_x, _a, rows, _lnfW, _lnfB);
        _head.Run(_a, logits, rows);
    }

    static void Add(float* a, float* b, float* y, int n)
    {
        int j = 0;
        for (; j + 16 <= n; j += 16) (Vector512.Load(a + j) + Vector512.Load(b + j)).Store(y + j);
        for (; j < n; j++) y[j] = a[j] + b[j];
    }

    // LayerNorm of each row of x [rows, d] into y: (x − mean) / √(var + eps) · w + b, the variance biased (as torch's).
    void Norm(float* x, float* y, int rows, float* w, float* b)
    {
        int d = _d;
        for (int i = 0; i < rows; i++, x += d, y += d)
        {
            var s = Vector512<float>.Zero;
            int j = 0;
            for (; j + 16 <= d; j += 16) s += Vector512.Load(x + j);
            float mean = Vector512.Sum(s);
            for (; j < d; j++) mean += x[j];
            mean /= d;
            var m = Vector512.Create(mean);
            var q = Vector512<float>.Zero;
            for (j = 0; j + 16 <= d; j += 16) { var e = Vector512.Load(x + j) - m; q = Vector512.FusedMultiplyAdd(e, e, q); }
            float var = Vector512.Sum(q);
            for (; j < d; j++) var += (x[j] - mean) * (x[j] - mean);
            float inv = 1f / MathF.Sqrt(var / d + _eps);
            var r = Vector512.Create(inv);
            for (j = 0; j + 16 <= d; j += 16)
                Vector512.FusedMultiplyAdd((Vector512.Load(x + j) - m) * r, Vector512.Load(w + j), Vector512.Load(b + j)).Store(y + j);
            for (; j < d; j++) y[j] = (x[j] - mean) * inv * w[j] + b[j];
        }
    }

    // GELU, tanh form, in place: 0.5·x·(1 + tanh(u)) = x · sigmoid(2u) = x / (1 + exp(−2u)), u = √(2/π)·(x + 0.044715·x³).
    static void Gelu(float* x, int n)
    {
        const float c = 0.7978845608028654f, k = 0.044715f;
        int j = 0;
        var one = Vector512<float>.One;
        for (; j + 16 <= n; j += 16)
        {
            var v = Vector512.Load(x + j);
            var u = v * Vector512.FusedMultiplyAdd(Vector512.Create(k) * v, v, one) * Vector512.Create(-2 * c);
            (v / (one + Vector512.Exp(u))).Store(x + j);
        }
        for (; j < n; j++) x[j] = x[j] / (1 + MathF.Exp(-2 * c * (x[j] + k * x[j] * x[j] * x[j])));
    }

    float* Alloc(long n)
    {
        var p = (float*)NativeMemory.AlignedAlloc((nuint)(n * sizeof(float)), 64);
        _owned.Add((nint)p);
        return p;
    }

    float* Copy(Tensor t)
    {
        using var c = t.detach().contiguous();
        var p = Alloc(c.NumberOfElements);
        Buffer.MemoryCopy((void*)LibTorchLoader.DataPtr(c), p, c.NumberOfElements * sizeof(float), c.NumberOfElements * sizeof(float));
        return p;
    }

    public void Dispose()
    {
        foreach (var p in _owned) NativeMemory.AlignedFree((void*)p);
        _owned.Clear();
        _head.Dispose();
    }
}
