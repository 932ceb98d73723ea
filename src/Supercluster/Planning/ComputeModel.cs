namespace Supercluster.Planning;

/// <summary>Seconds one GPU of the slowest pipeline stage spends on one micro-batch, split by kind of work.</summary>
public sealed record StageCompute(double Forward, double Backward, double Recompute, double Gemm, double Attention, double MemoryBound)
{
    public double Total => Forward + Backward + Recompute;
}

/// <summary>
/// Per-operation compute time of a transformer layer on one GPU, replacing a single achievable-fraction-of-peak constant.
/// * Every matmul with its real shape (tokens T = b·s/c; QKV T×h·(h+2kv)/t, output T×(h/t)·h, MLP T×h·(f or 2f gated)/t and
///   T×(f/t)·h, experts with their routed tokens, logits T×h·V/t), forward and both backward GEMMs (dgrad, wgrad).
///   A GEMM runs at the GPU's best-shape rate (published maximum achievable matmul FLOPS) × tile and wave quantisation:
///   output tiles of one of the CTA shapes cuBLAS/CUTLASS pick from (the best one is chosen), ⌈tiles/SMs⌉ waves, so a
///   partial last wave idles SMs (NVIDIA, "Matrix Multiplication Background", wave quantisation) × a K-pipeline ramp
///   K/(K + 64) relative to the benchmark's K — and never faster than its bytes at streaming bandwidth (roofline).
/// * Attention with FlashAttention: causal FLOPs 4·b·(a/t)·(s/c)·s·d/2 forward, backward 2.5× (FlashAttention's own
///   benchmark convention) at its published forward+backward throughput on this GPU. Unfused (Megatron-LM before
///   FlashAttention): QKᵀ and A·V as batched GEMMs with head-dim K, softmax + attention dropout as memory-bound passes.
/// * Norms, activations, residual adds, rotary, softmax and the loss as memory-bound ops: bytes ÷ streaming bandwidth;
///   backward moves twice the forward bytes (reads the saved input and the incoming gradient, writes the gradient).
/// * Recomputation: full repeats the layer's forward; selective repeats the unfused attention core (FlashAttention's
///   backward already recomputes it, inside its published throughput).
/// * Gradient accumulation: every micro-batch adds its weight gradients into the step's gradient as the run's software does it
///   (<see cref="GradAccumulation"/>): by default into the fp32 main-gradient buffer (Megatron-LM <c>main_grad</c>): read 2 B
///   (bf16 wgrad) + read 4 + write 4 B per parameter on the GPU, memory-bound.
/// </summary>
public static class ComputeModel
{
    /// <summary>CTA output tiles cuBLAS/CUTLASS kernels use for large half-precision GEMMs (CUTLASS default tile shapes).</summary>
    static readonly (int M, int N)[] Tiles = [(256, 128), (128, 256), (128, 128), (128, 64), (64, 128), (64, 64)];
    /// <summary>K elements to fill and drain a CTA's multi-stage main loop (e.g. 4 stages × 16–32).</summary>
    const double KRamp = 64;
    /// <summary>K of the shapes the GEMM benchmarks peak at (A100 6912×16384×2048, H100 6144×17920×2816): the reference ramp.</summary>
    const double KBenchmark = 2048;

    static double ElementBytes(Precision p) => p == Precision.Fp8 ? 1 : 2;
    /// <summary>Bytes moved per parameter per micro-batch to accumulate its gradient in fp32 (read bf16 wgrad, read + write fp32).</summary>
    public const double GradAccumulationBytesPerParam = 2 + 4 + 4;

    /// <summary>Bytes per parameter per micro-batch of the separate accumulation pass <paramref name="a"/> runs (none when fused
    /// into the wgrad GEMM; fp16 in place: read 2 + 2, write 2; DeepSpeed bf16: cast to an fp32 copy, then add; counted on every
    /// micro-batch, the first included).</summary>
    public static double AccumulationBytesPerParam(GradAccumulation a) => a switch
    {
        GradAccumulation.FusedIntoGemm => 0,
        GradAccumulation.Fp16InPlace => 2 + 2 + 2,
        GradAccumulation.Bf16ViaFp32Copy => (2 + 4) + (4 + 4 + 4),
        _ => GradAccumulationBytesPerParam,
    };

    /// <summary>Seconds for <paramref name="batch"/> independent (m×k)·(k×n) GEMMs.</summary>
    public static double GemmSeconds(GpuSpec g, Precision p, double m, double n, double k, double batch = 1)
    {
        if (m <= 0 || n <= 0 || k <= 0 || batch <= 0) return 0;
        double flops = 2 * m * n * k * batch;
        double rate = g.GemmFlops(p);
        double quant = WaveEfficiency(g.SmCount, m, n, batch);
        double ramp = Math.Min(1, k / (k + KRamp) * (KBenchmark + KRamp) / KBenchmark);
        double compute = flops / (rate * quant * ramp);
        double memory = batch * (m * k + k * n + m * n) * ElementBytes(p) / g.StreamBytesPerSecond;
        return Math.Max(compute, memory);
    }

    /// <summary>Share of the SMs' work slots doing useful work for the best tile: m·n·batch ÷ (waves · SMs · tile area).</summary>
    public static double WaveEfficiency(int sms, double m, double n, double batch = 1)
    {
        if (sms <= 0) return 1;
        double best = 0;
        foreach (var (tm, tn) in Tiles)
        {
            double tiles = Math.Ceiling(m / tm) * Math.Ceiling(n / tn) * batch;
            double waves = Math.Ceiling(tiles / sms);
            best = Math.Max(best, m * n * batch / (waves * sms * tm * tn));
        }
        return best;
    }

    /// <summary>Forward, dgrad and wgrad GEMMs of a linear layer y = x·W with x: T×k, W: k×n.</summary>
    static (double Fwd, double Bwd) Linear(GpuSpec g, Precision p, double tokens, double k, double n, double batch = 1) =>
        (GemmSeconds(g, p, tokens, n, k, batch),
         GemmSeconds(g, p, tokens, k, n, batch) + GemmSeconds(g, p, k, n, tokens, batch));

    /// <summary>
    /// dgrad and wgrad seconds of a layer's two column-parallel linears (QKV and the MLP's first), one micro-batch: the GEMMs
    /// Megatron-LM (2022 on, <c>LinearWithGradAccumulationAndAsyncCommunication</c>) runs its backward tensor-parallel
    /// communication under — the re-gathering of the sequence-parallel input under dgrad, the input gradient's reduce-scatter
    /// (or all-reduce without sequence parallelism) under wgrad.
    /// </summary>
    public static (double Dgrad, double Wgrad)[] ColumnParallelBackward(ModelSpec m, TrainingRun run, ParallelLayout l, GpuSpec g)
    {
        var p = run.Precision;
        double t = l.Tp, T = (double)l.MicroBatch * run.SeqLen / l.Cp, h = m.Hidden;
        double qkvOut = h / t + 2 * Math.Max(m.KvDim / t, m.HeadDim);
        double expertsLocal = (double)m.Experts / l.Ep, rows = T * m.ActiveExperts / expertsLocal;
        double upOut = (m.GatedFfn ? 2.0 : 1.0) * m.Ffn / t;
        return [(GemmSeconds(g, p, T, h, qkvOut), GemmSeconds(g, p, h, qkvOut, T)),
                (GemmSeconds(g, p, rows, h, upOut, expertsLocal), GemmSeconds(g, p, h, upOut, rows, expertsLocal))];
    }

    /// <summary>Time of one micro-batch on one GPU of the slowest stage: a middle one, the last with the output layer and the
    /// loss, or the first with the input embedding (with one stage, all of them).</summary>
    public static StageCompute Stage(ModelSpec m, TrainingRun run, ParallelLayout l, GpuSpec g)
    {
        var layer = Layer(m, run, l, g);
        var head = OutputLayer(m, run, l, g);
        var embedding = InputEmbedding(m, run, l, g);
        double middle = l.LayersPerMiddleStage(m.Layers), end = l.LayersOnLastStage(m.Layers);
        // Gradient accumulation of the layer's own parameters (dense ÷ TP, experts ÷ TP·EP), part of its backward.
        double layerParams = m.DenseParamsPerLayer / (double)l.Tp + m.ExpertParamsPerLayer / ((double)l.Tp * l.Ep);
        double accumulate = layerParams * AccumulationBytesPerParam(run.GradAccumulation) / g.StreamBytesPerSecond;
        layer = layer with { Backward = layer.Backward + accumulate, MemoryBound = layer.MemoryBound + accumulate };
        StageCompute Sum(double n, params StageCompute[] ends) => ends.Aggregate(
            new StageCompute(n * layer.Forward, n * layer.Backward, n * layer.Recompute, n * layer.Gemm, n * layer.Attention, n * layer.MemoryBound),
            (a, b) => new StageCompute(a.Forward + b.Forward, a.Backward + b.Backward, a.Recompute + b.Recompute, a.Gemm + b.Gemm,
                a.Attention + b.Attention, a.MemoryBound + b.MemoryBound));
        // The last stage is listed first, so it wins a tie.
        StageCompute[] stages = l.Pp == 1 ? [Sum(end, head, embedding)] : [Sum(end, head), Sum(middle), Sum(end, embedding)];
        return stages.MaxBy(s => s.Total)!;
    }

    /// <summary>The input embedding on the first stage, one micro-batch (<see cref="EmbeddingTraffic"/>): memory-bound.</summary>
    public static StageCompute InputEmbedding(ModelSpec m, TrainingRun run, ParallelLayout l, GpuSpec g)
    {
        double T = (double)l.MicroBatch * run.SeqLen / l.Cp, bw = g.StreamBytesPerSecond;
        double fwd = T * m.Hidden * EmbeddingTraffic.ForwardBytesPerElement / bw;
        double bwd = (T * m.Hidden * EmbeddingTraffic.BackwardBytesPerElement
                      + (double)m.Vocab / l.Tp * m.Hidden * EmbeddingTraffic.GradientBytesPerParam(run.GradAccumulation)) / bw;
        return new StageCompute(fwd, bwd, 0, 0, 0, fwd + bwd);
    }

    /// <summary>One transformer layer, one micro-batch, one GPU.</summary>
    public static StageCompute Layer(ModelSpec m, TrainingRun run, ParallelLayout l, GpuSpec g)
    {
        var p = run.Precision;
        double t = l.Tp, T = (double)l.MicroBatch * run.SeqLen / l.Cp, h = m.Hidden, d = m.HeadDim;
        double kvLocal = Math.Max(m.KvDim / t, d);            // kv heads are replicated when TP > kv heads
        double headsLocal = m.Heads / t;

        // GEMMs: QKV, attention output, MLP (per expert: balanced routing gives each local expert T·k·ep/E rows).
        var qkv = Linear(g, p, T, h, h / t + 2 * kvLocal);
        var proj = Linear(g, p, T, h / t, h);
        double expertsLocal = (double)m.Experts / l.Ep, rows = T * m.ActiveExperts / expertsLocal;
        var up = Linear(g, p, rows, h, (m.GatedFfn ? 2.0 : 1.0) * m.Ffn / t, expertsLocal);
        var down = Linear(g, p, rows, m.Ffn / t, h, expertsLocal);
        if (run.Userbuffers is { } ub && l.Tp > 1)
        {
            // Userbuffers runs the all-gather-side GEMMs in ring chunks and the reduce-scatter side in pipeline chunks on the SMs
            // its reduce-scatter leaves (UserbufferOverlap); the column-parallel dgrad/wgrad (bulk) stay whole.
            int ring = ub.RingChunks(l.Tp), pipe = ub.PipelineSplits;
            double qkvOut = h / t + 2 * kvLocal, upOut = (m.GatedFfn ? 2.0 : 1.0) * m.Ffn / t;
            qkv = (UserbufferOverlap.ChunkedGemmSeconds(g, p, T, qkvOut, h, ring), qkv.Bwd);
            up = (UserbufferOverlap.ChunkedGemmSeconds(g, p, rows, upOut, h, ring, expertsLocal), up.Bwd);
            proj = (UserbufferOverlap.ChunkedGemmSeconds(UserbufferOverlap.WithoutSms(g, ub.ProjFpropSms), p, T, h, h / t, pipe),
                    UserbufferOverlap.ChunkedGemmSeconds(g, p, T, h / t, h, ring) + GemmSeconds(g, p, h / t, h, T));
            down = (UserbufferOverlap.ChunkedGemmSeconds(UserbufferOverlap.WithoutSms(g, ub.Fc2FpropSms), p, rows, h, m.Ffn / t, pipe, expertsLocal),
                    UserbufferOverlap.ChunkedGemmSeconds(g, p, rows, m.Ffn / t, h, ring, expertsLocal) + GemmSeconds(g, p, m.Ffn / t, h, rows, expertsLocal));
        }
        double gemmFwd = qkv.Fwd + proj.Fwd + up.Fwd + down.Fwd, gemmBwd = qkv.Bwd + proj.Bwd + up.Bwd + down.Bwd;

        // Attention core.
        double bw = g.StreamBytesPerSecond, e = 2; // activations in bf16
        double attnFwd, attnBwd, attnRecompute;
        double scores = l.MicroBatch * headsLocal * (run.SeqLen / (double)l.Cp) * run.SeqLen; // score elements per micro-batch
        if (run.Attention == AttentionKernel.Flash && g.FlashAttentionFlops > 0)
        {
            double causalFwdFlops = 4 * scores * d / 2;
            attnFwd = causalFwdFlops / g.FlashAttentionFlops;
            attnBwd = 2.5 * attnFwd;
            attnRecompute = 0; // FlashAttention's backward recomputes the scores itself (counted in its throughput)
        }
        else
        {
            double batch = l.MicroBatch * headsLocal, sq = run.SeqLen / (double)l.Cp, sk = run.SeqLen;
            double qk = GemmSeconds(g, p, sq, sk, d, batch), av = GemmSeconds(g, p, sq, d, sk, batch);
            // fused scale-mask-softmax (read 2, write 2 B) + dropout (read 2, write 2 + 1 B mask) per score element;
            // backward: softmax (read 2+2, write 2) + dropout (read 2+1, write 2).
            double softmaxFwd = scores * 9 / bw, softmaxBwd = scores * 11 / bw;
            attnFwd = qk + av + softmaxFwd;
            attnBwd = 2 * qk + 2 * av + softmaxBwd;
            attnRecompute = l.Recompute == Recompute.Selective ? attnFwd : 0;
        }

        // Memory-bound elementwise ops per token (bytes), forward; h-wide ops are split over TP with sequence parallelism.
        double hs = l.SequenceParallel ? h / t : h;
        double norms = 2 * 2 * hs * e;                           // two (RMS/Layer)Norms: read + write
        double residual = 2 * 3 * hs * e;                        // two residual adds: read 2, write 1
        double activation = (m.GatedFfn ? 3.0 : 2.0) * m.Ffn / t * e * m.ActiveExperts; // SwiGLU reads 2 writes 1; GeLU reads 1 writes 1
        double rotary = m.GptStyle ? 0 : 2 * (h / t + kvLocal) * e; // Llama/Nemotron-4: rotary on q and k (read + write)
        double memFwd = T * (norms + residual + activation + rotary) / bw;
        double memBwd = 2 * memFwd;
        if (m.GptStyle)
        {
            var (extraFwd, extraBwd) = GptLayerExtraBytesPerToken(m, l, run.Attention == AttentionKernel.Flash && g.FlashAttentionFlops > 0);
            memFwd += T * extraFwd / bw;
            memBwd += T * extraBwd / bw;
        }

        double fwd = gemmFwd + attnFwd + memFwd, bwd = gemmBwd + attnBwd + memBwd;
        double recompute = l.Recompute == Recompute.Full ? fwd : attnRecompute;
        double attnTotal = attnFwd + attnBwd + (l.Recompute == Recompute.Full ? attnFwd : attnRecompute);
        double memTotal = memFwd + memBwd + (l.Recompute == Recompute.Full ? memFwd : 0);
        return new StageCompute(fwd, bwd, recompute, gemmFwd + gemmBwd + (l.Recompute == Recompute.Full ? gemmFwd : 0), attnTotal, memTotal);
    }

    /// <summary>
    /// Memory passes of a GPT-2/3-style layer as Megatron-LM runs it (2021 and 2022 code: <c>megatron/model/transformer.py</c>,
    /// <c>megatron/mpu/layers.py</c>) beyond the norm/residual/activation passes every layer has, bytes per token, forward and
    /// backward. GPT-style layers (not gated) carry biases and hidden dropout; the Llama family (gated FFN) has neither.
    /// * QKV bias: the column-parallel linear adds it after the GEMM as a separate pass (2021: <c>F.linear</c> on a 3-D input is
    ///   <c>matmul</c> then <c>output += bias</c> in PyTorch ≤ 1.9; 2022: <c>output = output + bias</c>): read + write the QKV
    ///   output. The other three linears hand their bias to a fused bias-GeLU / bias-dropout-add (already counted).
    /// * Bias gradients: <c>grad_output.sum(dim=0)</c> (2022) or autograd's broadcast reduction (2021) reads each biased
    ///   linear's output gradient once: QKV, MLP-up, and the two row-parallel outputs (h wide, h/t with sequence parallelism).
    /// * Hidden dropout (<c>bias_dropout_add</c>, twice per layer): writes a 1-byte mask forward, reads it backward.
    /// * LayerNorm backward (apex <c>FusedLayerNorm</c>): the γ/β gradient kernel (<c>cuComputePartGradGammaBeta</c>) reads
    ///   the input and the output gradient a second time, besides the input-gradient kernel.
    /// * Unfused attention only: the context is made contiguous after A·V (<c>permute(2, 0, 1, 3).contiguous()</c>: read + write
    ///   h/t) and Q, K, V are views of one QKV tensor (<c>split_tensor_along_last_dim</c>), so backward concatenates their
    ///   gradients into one (read + write the QKV width).
    /// </summary>
    public static (double Forward, double Backward) GptLayerExtraBytesPerToken(ModelSpec m, ParallelLayout l, bool flashAttention)
    {
        const double e = 2, mask = 1;
        double t = l.Tp, h = m.Hidden, hs = l.SequenceParallel ? h / t : h;
        double qkvOut = h / t + 2 * Math.Max(m.KvDim / t, m.HeadDim);
        double upOut = m.Ffn / t * m.ActiveExperts;
        double attnCopies = flashAttention ? 0 : 1;
        double forward = 2 * qkvOut * e                    // QKV bias add
                       + 2 * hs * mask                      // two dropout masks written
                       + attnCopies * 2 * (h / t) * e;      // context made contiguous
        double backward = (qkvOut + upOut + 2 * hs) * e    // four bias gradients: read each output gradient
                        + 2 * hs * mask                     // two dropout masks read
                        + 2 * 2 * hs * e                    // LayerNorm γ/β kernels re-read input and output gradient (two norms)
                        + attnCopies * 2 * qkvOut * e;      // Q, K, V gradients concatenated
        return (forward, backward);
    }

    /// <summary>Output layer (logits T×h·V/t) and the cross-entropy loss on the last stage (its passes over fp32 logits:
    /// <see cref="CrossEntropyTraffic"/>).</summary>
    public static StageCompute OutputLayer(ModelSpec m, TrainingRun run, ParallelLayout l, GpuSpec g)
    {
        double T = (double)l.MicroBatch * run.SeqLen / l.Cp, vLocal = (double)m.Vocab / l.Tp, bw = g.StreamBytesPerSecond;
        var (fwd, bwd) = Linear(g, run.Precision, T, m.Hidden, vLocal);
        double lossFwd = T * vLocal * CrossEntropyTraffic.ForwardBytesPerLogit / bw;
        double lossBwd = T * vLocal * CrossEntropyTraffic.BackwardBytesPerLogit / bw;
        double accumulate = m.Hidden * vLocal * AccumulationBytesPerParam(run.GradAccumulation) / bw;
        return new StageCompute(fwd + lossFwd, bwd + lossBwd + accumulate, 0, fwd + bwd, 0, lossFwd + lossBwd + accumulate);
    }
}
