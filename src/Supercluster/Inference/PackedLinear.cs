using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using Supercluster.Runtime;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Supercluster.Inference;

/// <summary>
/// y = x·Wᵀ + b over a decode step's few rows, in C#, from a copy of W laid out [in, out] (taken once): each row's input
/// value is broadcast against 64 consecutive outputs, 4 rows × 64 outputs of accumulators. At 16 rows of `small`'s
/// shapes (128→384, 128→512, 512→128) libtorch's <c>linear</c> runs at 43–73 GFLOP/s on one core of this machine and
/// this at 93–96 (docs/serving.md, "The 10× target"): the 16-row step's growth over a one-row step is mostly these
/// matrix products. The copy makes it only for a model whose weights do not change while it serves
/// (<see cref="BatchScheduler"/>'s; training, LoRA and sampling keep libtorch's path).
/// </summary>
public sealed unsafe class PackedLinear : IDisposable
{
    /// <summary>
    /// Forwards of MinRows..MaxRows tokens take the C# loop. A lone stream's step takes it too: in process, best of 300
    /// alternating rounds, the one-row step is no slower with it (1.09–1.13× faster in three runs at load 9–13, 0.398 vs
    /// 0.403 ms quiet), so serving batches only would flatter the 16/1 ratio. More than MaxRows go to libtorch, whose blocking catches up: per layer of `small` the C# loop won at 16 and 32
    /// rows (99 vs 154 µs at 32), was even at 48 and lost at 64 (256 vs 229 µs; CPU time, best of 7, load 13–16).
    /// </summary>
    public const int MinRows = 1, MaxRows = 40;
    /// <summary>The scheduler packs a GPT-2 model up to this size (the copy doubles its projections' memory; measured on `small`).</summary>
    public const long MaxModelParameters = 20_000_000;

    float* _wt;                 // [In, Out], 64-byte aligned
    float* _b;                  // [Out], zeros without a bias
    public int In { get; }
    public int Out { get; }

    public PackedLinear(Linear linear) : this(linear.weight!, linear.bias) { }

    /// <summary>From a weight [out, in] and an optional bias [out] (a tied head: GPT-2's token table, no bias).</summary>
    public PackedLinear(Tensor w, Tensor? bias)
    {
        if (w.device_type != DeviceType.CPU || w.dtype != ScalarType.Float32 || w.dim() != 2)
            throw new ArgumentException($"PackedLinear takes a float32 CPU weight [out, in], got {w.dtype} {w.device_type} [{string.Join(", ", w.shape)}]");
        Out = (int)w.shape[0];
        In = (int)w.shape[1];
        _wt = (float*)NativeMemory.AlignedAlloc((nuint)((long)In * Out * sizeof(float)), 64);
        _b = (float*)NativeMemory.AlignedAlloc((nuint)(Out * sizeof(float)), 64);
        using (var t = w.detach().t().contiguous())
            Buffer.MemoryCopy((void*)LibTorchLoader.DataPtr(t), _wt, (long)In * Out * sizeof(float), (long)In * Out * sizeof(float));
        if (bias is not null)
            using (var b = bias.detach().contiguous())
                Buffer.MemoryCopy((void*)LibTorchLoader.DataPtr(b), _b, Out * sizeof(float), Out * sizeof(float));
        else
            new Span<float>(_b, Out).Clear();
    }

    /// <summary>Whether <see cref="Forward"/> takes x: float32 CPU, contiguous, last dimension <see cref="In"/>, <see cref="MinRows"/>..<see cref="MaxRows"/> rows, no autograd, 512-bit vectors.</summary>
    public bool Takes(Tensor x) =>
        Vector512.IsHardwareAccelerated && x.device_type == DeviceType.CPU && x.dtype == ScalarType.Float32 && x.is_contiguous()
        && x.shape[^1] == In && x.NumberOfElements / In is >= MinRows and <= MaxRows && !is_grad_enabled();

    /// <summary>x [..., In] → [..., Out], any number of rows (<see cref="Takes"/> says where it is used).</summary>
    public Tensor Forward(Tensor x)
    {
        var shape = x.shape.ToArray();
        shape[^1] = Out;
        var y = empty(shape, ScalarType.Float32);
        Run((float*)LibTorchLoader.DataPtr(x), (float*)LibTorchLoader.DataPtr(y), (int)(x.NumberOfElements / In));
        return y;
    }

    /// <summary>
    /// y = x·Wᵀ + b over <paramref name="rows"/> rows of x [rows, In] into y [rows, Out]; with <paramref name="add"/>,
    /// y += x·Wᵀ + b instead (a residual add in the store: <see cref="Gpt2Decoder"/>).
    /// </summary>
    internal void Run(float* x, float* y, int rows, bool add = false)
    {
        int k = In, n = Out, j = 0;
        for (; j + 64 <= n; j += 64)
        {
            int i = 0;
            for (; i + 4 <= rows; i += 4) Block4x64(x + i * k, _wt + j, _b + j, y + i * n + j, k, n, add);
            for (; i < rows; i++) Row(x + i * k, _wt + j, _b + j, y + i * n + j, k, n, 64, add);
        }
        for (; j + 16 <= n; j += 16)
            for (int i = 0; i < rows; i++) Row(x + i * k, _wt + j, _b + j, y + i * n + j, k, n, 16, add);
        for (; j < n; j++)                                                          // the last Out % 16 outputs
            for (int i = 0; i < rows; i++)
            {
                float s = 0;
                for (int q = 0; q < k; q++) s += x[i * k + q] * _wt[q * n + j];
                y[i * n + j] = (add ? y[i * n + j] : 0) + (s + _b[j]);
            }
    }

    // The store of one 16-wide accumulator: y = acc + b, or y += acc + b.
    static void Store(Vector512<float> acc, float* b, float* y, bool add) =>
        (add ? Vector512.Load(y) + (acc + Vector512.Load(b)) : acc + Vector512.Load(b)).Store(y);

    // 16 accumulators (4 rows × 4 vectors of 16 outputs), 4 weight loads and 4 broadcasts per input: the weights are read
    // once per 4 rows, not once per row.
    static void Block4x64(float* x, float* w, float* b, float* y, int k, int n, bool add)
    {
        Vector512<float> a00 = default, a01 = default, a02 = default, a03 = default, a10 = default, a11 = default, a12 = default, a13 = default,
            a20 = default, a21 = default, a22 = default, a23 = default, a30 = default, a31 = default, a32 = default, a33 = default;
        for (int q = 0; q < k; q++)
        {
            float* wr = w + q * n;
            var w0 = Vector512.Load(wr); var w1 = Vector512.Load(wr + 16); var w2 = Vector512.Load(wr + 32); var w3 = Vector512.Load(wr + 48);
            var x0 = Vector512.Create(x[q]); var x1 = Vector512.Create(x[k + q]); var x2 = Vector512.Create(x[2 * k + q]); var x3 = Vector512.Create(x[3 * k + q]);
            a00 = Vector512.FusedMultiplyAdd(x0, w0, a00); a01 = Vector512.FusedMultiplyAdd(x0, w1, a01); a02 = Vector512.FusedMultiplyAdd(x0, w2, a02); a03 = Vector512.FusedMultiplyAdd(x0, w3, a03);
            a10 = Vector512.FusedMultiplyAdd(x1, w0, a10); a11 = Vector512.FusedMultiplyAdd(x1, w1, a11); a12 = Vector512.FusedMultiplyAdd(x1, w2, a12); a13 = Vector512.FusedMultiplyAdd(x1, w3, a13);
            a20 = Vector512.FusedMultiplyAdd(x2, w0, a20); a21 = Vector512.FusedMultiplyAdd(x2, w1, a21); a22 = Vector512.FusedMultiplyAdd(x2, w2, a22); a23 = Vector512.FusedMultiplyAdd(x2, w3, a23);
            a30 = Vector512.FusedMultiplyAdd(x3, w0, a30); a31 = Vector512.FusedMultiplyAdd(x3, w1, a31); a32 = Vector512.FusedMultiplyAdd(x3, w2, a32); a33 = Vector512.FusedMultiplyAdd(x3, w3, a33);
        }
        Store(a00, b, y, add); Store(a01, b + 16, y + 16, add); Store(a02, b + 32, y + 32, add); Store(a03, b + 48, y + 48, add);
        y += n; Store(a10, b, y, add); Store(a11, b + 16, y + 16, add); Store(a12, b + 32, y + 32, add); Store(a13, b + 48, y + 48, add);
        y += n; Store(a20, b, y, add); Store(a21, b + 16, y + 16, add); Store(a22, b + 32, y + 32, add); Store(a23, b + 48, y + 48, add);
        y += n; Store(a30, b, y, add); Store(a31, b + 16, y + 16, add); Store(a32, b + 32, y + 32, add); Store(a33, b + 48, y + 48, add);
    }

    static void Row(float* x, float* w, float* b, float* y, int k, int n, int cols, bool add)
    {
        if (cols == 64)                                 // four independent sums: one chain of dependent FMAs would wait on each
        {
            Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
            for (int q = 0; q < k; q++)
            {
                var xq = Vector512.Create(x[q]);
                float* wr = w + q * n;
                a0 = Vector512.FusedMultiplyAdd(xq, Vector512.Load(wr), a0); a1 = Vector512.FusedMultiplyAdd(xq, Vector512.Load(wr + 16), a1);
                a2 = Vector512.FusedMultiplyAdd(xq, Vector512.Load(wr + 32), a2); a3 = Vector512.FusedMultiplyAdd(xq, Vector512.Load(wr + 48), a3);
            }
            Store(a0, b, y, add); Store(a1, b + 16, y + 16, add); Store(a2, b + 32, y + 32, add); Store(a3, b + 48, y + 48, add);
            return;
        }
        for (int c = 0; c < cols; c += 16)
        {
            var a = Vector512<float>.Zero;
            for (int q = 0; q < k; q++) a = Vector512.FusedMultiplyAdd(Vector512.Create(x[q]), Vector512.Load(w + q * n + c), a);
            Store(a, b + c, y + c, add);
        }
    }

    public void Dispose()
    {
        if (_wt is null) return;
        NativeMemory.AlignedFree(_wt);
        NativeMemory.AlignedFree(_b);
        _wt = null;
        _b = null;
    }
}
