using System.Diagnostics;
using Supercluster.Distributed;
using Supercluster.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace Supercluster.Planning;

/// <summary>One matmul of the model at its training shape, timed on this machine: (M×K)·(K×N) fp32.</summary>
public sealed record GemmTiming(string Name, long M, long N, long K, double Seconds)
{
    public double Gflops => 2.0 * M * N * K / Seconds / 1e9;
}

/// <summary>What <c>plan --device cpu --calibrate</c> measures, on every rank at once (ranks share the cores and memory, as in <c>train</c>).</summary>
/// Elementwise ops are timed at the model's sizes (an activation [B·T, h], an MLP activation [B·T, f], the logits [B·T, V],
/// the parameter vector and its ZeRO shard): on a CPU their fixed cost (thread fork/join) matters as much as their bytes.
public sealed record CpuMeasurements(
    int Ranks, int Threads, IReadOnlyList<GemmTiming> Gemms, double AttentionSeconds, double StreamBytesPerSecond, double OpSeconds,
    double HiddenOpSeconds, double FfnOpSeconds, double VocabOpSeconds, double ParamOpSeconds, double ShardOpSeconds,
    double AllReduceBytesPerSecond, double AllReduceLatencySeconds, double PointToPointBytesPerSecond);

/// <summary><c>train</c>'s step on CPU ranks, predicted from the measurements; <see cref="Communication"/> is what <c>train</c> logs as rank_comm_ms.</summary>
public sealed record CpuStepPrediction(double Step, double Matmuls, double Attention, double MemoryBound, double Dispatch, double Optimizer,
    double Communication, int MicroBatches, long Parameters);

/// <summary>
/// Checks the planner against our own engine. The step of <c>train</c> on CPU ranks (fp32, <c>DataParallel</c>) is composed
/// like the GPU model, from figures measured here instead of data sheets:
/// * matmuls: each of the layer's GEMMs (QKV, output, MLP, LM head) at its forward, dgrad and wgrad shape, timed with torch.mm;
/// * attention: scaled_dot_product_attention forward + backward at the model's [B, H, T, d], timed;
/// * memory-bound ops (norms, residual adds, activation, head copies, embedding, softmax cross-entropy, gradient
///   accumulation into the flat buffer, AdamW's passes over its state): counted passes (from Gpt2.cs, Llama.cs, AdamW.cs)
///   × the measured time of one elementwise op (a += b) at that tensor's size; streaming bandwidth is reported beside;
/// * dispatch: each further TorchSharp op (views, autograd nodes) costs a fixed CPU time, measured on a one-element op;
/// * communication: MPI all-reduce fitted α + bytes/β from two sizes, then train's 32 MB buckets (ZeRO-1: reduce-scatter +
///   all-gather, ring formulas, <see cref="Collectives"/>); point-to-point from a two-rank broadcast (reported only).
/// </summary>
public static class CpuCalibration
{
    const int Reps = 5;
    const long BucketElements = 8 << 20; // DataParallel's all-reduce bucket (fp32 elements)
    /// <summary>TorchSharp ops per layer per micro-batch, forward + autograd backward (counted from Gpt2.cs/Llama.cs: ≈ 20 forward, ≈ 30 backward nodes).</summary>
    const int OpsPerLayer = 50, OpsPerModel = 40;
    /// <summary>Passes over the (sharded) parameter vector per torch AdamW step (AdamW.cs / DataParallel.cs: average over ranks,
    /// norm, clip scale, decay, lerp, v·β₂, addcmul, sqrt, div, add, addcdiv), each ≈ one elementwise op at that size.</summary>
    const double AdamPasses = 11;

    static double Median(List<double> xs) { xs.Sort(); return xs[xs.Count / 2]; }

    static double Time(ICommunicator comm, Action a)
    {
        a(); // warm-up
        var times = new List<double>();
        for (int i = 0; i < Reps; i++)
        {
            comm.Barrier();
            var sw = Stopwatch.StartNew();
            a();
            times.Add(sw.Elapsed.TotalSeconds);
        }
        return Median(times);
    }

    /// <summary>GEMM shapes of one layer and the head: (name, rows = tokens, in, out).</summary>
    public static IEnumerable<(string Name, long In, long Out)> Linears(ModelConfig c)
    {
        long h = c.NEmbd, kv = (long)c.NKvHead * c.HeadDim;
        if (c.Family == ModelFamily.Llama) { yield return ("q", h, h); yield return ("k", h, kv); yield return ("v", h, kv); }
        else yield return ("qkv", h, h + 2 * kv);
        yield return ("attn-out", h, h);
        if (c.Family == ModelFamily.Llama) { yield return ("gate", h, c.FfnHidden); yield return ("up", h, c.FfnHidden); }
        else yield return ("fc", h, c.FfnHidden);
        yield return ("mlp-out", c.FfnHidden, h);
    }

    public static CpuMeasurements Measure(ModelConfig c, int microBatch, int seq, ICommunicator comm)
    {
        using var scope = NewDisposeScope();
        long tokens = (long)microBatch * seq;
        var gemms = new List<GemmTiming>();
        void Gemm(string name, long m, long n, long k)
        {
            var a = randn(m, k); var b = randn(k, n);
            gemms.Add(new GemmTiming(name, m, n, k, Time(comm, () => { using var _ = mm(a, b); })));
        }
        foreach (var (name, inF, outF) in Linears(c).Append(("head", c.NEmbd, c.PaddedVocab)))
        {
            Gemm(name, tokens, outF, inF);              // forward   y = x·Wᵀ
            Gemm(name + " dgrad", tokens, inF, outF);   // dx = dy·W
            Gemm(name + " wgrad", outF, inF, tokens);   // dW = dyᵀ·x
        }

        var q = randn(microBatch, c.NHead, seq, c.HeadDim).requires_grad_(true);
        var k = randn(microBatch, c.NHead, seq, c.HeadDim).requires_grad_(true);
        var v = randn(microBatch, c.NHead, seq, c.HeadDim).requires_grad_(true);
        double attention = Time(comm, () =>
        {
            using var s = NewDisposeScope();
            var o = nn.functional.scaled_dot_product_attention(q, k, v, is_casual: true);
            o.sum().backward();
        });

        double Elementwise(long n) { var a = zeros(n); var b = ones(n); return Time(comm, () => a.add_(b)); }
        double stream = 3.0 * (16L << 20) * 4 / Elementwise(16L << 20); // 64 MB each: beyond the caches
        var one = zeros(1); var two = ones(1);
        double op = Time(comm, () => { for (int i = 0; i < 1000; i++) one.add_(two); }) / 1000;
        long parameters = ParameterCount(c);
        double hiddenOp = Elementwise(tokens * c.NEmbd), ffnOp = Elementwise(tokens * c.FfnHidden), vocabOp = Elementwise(tokens * c.PaddedVocab);
        double paramOp = Elementwise(parameters), shardOp = Elementwise(Math.Max(1, parameters / comm.WorldSize));

        double arBw = 0, arLat = 0, p2p = 0;
        if (comm.WorldSize > 1)
        {
            long large = 8L << 20, small = 1L << 10; // elements: 32 MB (train's bucket) and 4 KB
            var bl = zeros(large); var bs = zeros(small);
            double tl = Time(comm, () => comm.AllReduceSum(bl)), ts = Time(comm, () => comm.AllReduceSum(bs));
            // ring model t = 2(n−1)/n·B/β + 2(n−1)·α: β from 32 MB (bandwidth-bound), α from 4 KB (latency-bound)
            double n = comm.WorldSize, f = 2 * (n - 1) / n;
            arBw = f * large * 4 / tl;
            arLat = Math.Max(0, (ts - f * small * 4 / arBw) / (2 * (n - 1)));
            p2p = large * 4 / Time(comm, () => comm.Broadcast(bl, 0));
        }
        return new CpuMeasurements(comm.WorldSize, torch.get_num_threads(), gemms, attention, stream, op,
            hiddenOp, ffnOp, vocabOp, paramOp, shardOp, arBw, arLat, p2p);
    }

    /// <summary>Predicted step of <c>train</c> with this micro-batch, sequence, accumulation and ZeRO stage on the measured ranks.</summary>
    public static CpuStepPrediction Predict(ModelConfig c, int microBatch, int seq, int accumulation, int zero, CpuMeasurements me)
    {
        double Seconds(string name) => me.Gemms.Where(g => g.Name == name || g.Name.StartsWith(name + " ")).Sum(g => g.Seconds);
        double layerGemms = Linears(c).Sum(l => Seconds(l.Name));
        double matmuls = c.NLayer * layerGemms + Seconds("head");
        double attention = c.NLayer * me.AttentionSeconds;

        // Elementwise passes per layer, forward (Gpt2.cs: 2 LayerNorms, 2 residual adds, head merge copy, q/k/v made
        // contiguous for SDPA ≈ 3; GELU on f. Llama.cs: 2 RMSNorms ≈ 5 passes each, rotary ≈ 8 on q and k, 2 residual adds,
        // head merge; SwiGLU silu + mul ≈ 3 on f); the backward makes about twice as many.
        bool llama = c.Family == ModelFamily.Llama;
        double hiddenPasses = llama ? 10 + 8 + 2 + 1 : 2 + 2 + 1 + 3, ffnPasses = llama ? 3 : 1;
        double layer = 3 * (hiddenPasses * me.HiddenOpSeconds + ffnPasses * me.FfnOpSeconds);
        double model = 3 * 3 * me.HiddenOpSeconds       // embedding lookup (+ positions), final norm
                     + 6 * me.VocabOpSeconds            // log-softmax, NLL and their backward on [B·T, V]
                     + me.ParamOpSeconds;               // autograd accumulates into the flat gradient buffer
        double memory = accumulation * (c.NLayer * layer + model);
        double dispatch = accumulation * (c.NLayer * OpsPerLayer + OpsPerModel) * me.OpSeconds;

        long parameters = ParameterCount(c);
        long n = me.Ranks;
        double optimizer = AdamPasses * (zero == 1 ? me.ShardOpSeconds : me.ParamOpSeconds) + me.ParamOpSeconds; // + zeroing the gradients
        const double e = 4; // fp32 gradients on the wire
        double comm = 0;
        if (n > 1)
        {
            double bytes = parameters * e;
            if (zero == 1)
                comm = Collectives.ReduceScatter(bytes, n, me.AllReduceBytesPerSecond, me.AllReduceLatencySeconds)
                     + Collectives.RingAllReduce(8, n, me.AllReduceBytesPerSecond, me.AllReduceLatencySeconds)
                     + Collectives.AllGather(bytes, n, me.AllReduceBytesPerSecond, me.AllReduceLatencySeconds);
            else
                for (long off = 0; off < parameters; off += BucketElements)
                    comm += Collectives.RingAllReduce(Math.Min(BucketElements, parameters - off) * e, n, me.AllReduceBytesPerSecond, me.AllReduceLatencySeconds);
        }
        double compute = accumulation * (matmuls + attention);
        return new CpuStepPrediction(compute + memory + dispatch + optimizer + comm, accumulation * matmuls, accumulation * attention, memory,
            dispatch, optimizer, comm, accumulation, parameters);
    }

    /// <summary>Parameters of the engine's model (CausalLM): layers + embeddings (+ positions and biases for GPT-2, tied head).</summary>
    public static long ParameterCount(ModelConfig c)
    {
        long h = c.NEmbd, kv = (long)c.NKvHead * c.HeadDim, f = c.FfnHidden, V = c.PaddedVocab;
        if (c.Family == ModelFamily.Llama)
            return c.NLayer * (h * (h + 2 * kv) + h * h + 3 * h * f + 2 * h) + 2 * V * h + h;
        long layer = h * 3 * h + 3 * h + h * h + h + h * f + f + f * h + h + 4 * h;
        return c.NLayer * layer + V * h + (long)c.SeqLen * h + 2 * h;
    }
}
