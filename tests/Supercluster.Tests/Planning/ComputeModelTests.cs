using Supercluster.Planning;

namespace Supercluster.Tests.Planning;

/// <summary>The per-operation compute model against values computed by hand (arithmetic in the comments).</summary>
public class ComputeModelTests
{
    static readonly GpuSpec A100 = GpuCatalog.Get("A100-80GB"), H100 = GpuCatalog.Get("H100-SXM");

    [Fact]
    public void WaveQuantisationPicksTheBestTile()
    {
        // 1024×1024 output on 108 SMs: 256×128 → 32 tiles, 1 wave, 32/108 = 0.296; 128×128 → 64 tiles, 0.593;
        // 128×64 → 128 tiles, 2 waves, 128/216 = 0.593; 64×64 → 256 tiles, 3 waves, 256/324 = 0.790 (best).
        Assert.Equal(256.0 / 324, ComputeModel.WaveEfficiency(108, 1024, 1024), 12);
        // 8192×8192: 256×128 → 2048 tiles, ⌈2048/108⌉ = 19 waves, 2048/2052.
        Assert.Equal(2048.0 / 2052, ComputeModel.WaveEfficiency(108, 8192, 8192), 12);
    }

    [Fact]
    public void LargeGemmRunsAtTheBenchmarkRateTimesQuantisation()
    {
        // 8192³ bf16 on A100: 2·8192³ = 1.0995e12 FLOPs at 312e12 × 0.859 (MAMF 267.9/312) × 0.887 (layer-shape share)
        // × 2048/2052 = 4.63421 ms. K ramp: 8192/(8192+64) · (2048+64)/2048 = 1.023 → capped at 1.
        Assert.Equal(0.0046342115, ComputeModel.GemmSeconds(A100, Precision.Bf16, 8192, 8192, 8192), 9);
    }

    [Fact]
    public void A100LayerShapeShareIsTheMeanOfTwoPublishedBenchmarks()
    {
        // Each published rate against the planner's own rate for the same shapes without the share (MAMF × wave × ramp):
        // mli/transformers-benchmarks (A100 80GB, fp16 8192³): 230 TFLOP/s ÷ 267.485 (312 × 0.859 × 2048/2052) = 0.8599.
        // EleutherAI cookbook sample (h 4096, 4 × 2048 tokens, fp16 forward): QKV 8192×12288×4096 at 241.616 TFLOP/s,
        // attention output 8192×4096×4096 at 234.852, h→4h 8192×16384×4096 at 241.128, 4h→h 8192×4096×16384 at 252.764;
        // together 3.2985e12 FLOPs in 13.493 ms = 244.5 TFLOP/s ÷ the planner's 267.4 for the same four = 0.914.
        var bare = A100 with { LayerShapeGemmShare = 1 };
        double Planner(double m, double n, double k) => 2 * m * n * k / ComputeModel.GemmSeconds(bare, Precision.Fp16, m, n, k);
        double square = 230e12 / Planner(8192, 8192, 8192);
        Assert.Equal(0.8599, square, 4);
        (double N, double K, double Tflops)[] layer = [(12288, 4096, 241.616), (4096, 4096, 234.852), (16384, 4096, 241.128), (4096, 16384, 252.764)];
        double flops = layer.Sum(g => 2 * 8192 * g.N * g.K);
        double measured = layer.Sum(g => 2 * 8192 * g.N * g.K / (g.Tflops * 1e12));
        double planned = layer.Sum(g => ComputeModel.GemmSeconds(bare, Precision.Fp16, 8192, g.N, g.K));
        Assert.Equal(244.5, flops / measured / 1e12, 1);
        double cookbook = planned / measured;
        Assert.Equal(0.914, cookbook, 3);
        Assert.Equal((square + cookbook) / 2, A100.LayerShapeGemmShare, 3);
    }

    [Fact]
    public void H100LayerShapeShareIsTheMeanOfTwoPublishedBenchmarks()
    {
        // bf16 square GEMMs on an H100 SXM, each source's planned seconds (MAMF 792.1 × wave × ramp, no share) ÷ its measured
        // seconds over all its sizes. pranjalssh/fast.cu README, cuBLAS ("kernel 0"): 8192³ at 797.8 TFLOP/s (planner 786.6:
        // 256×128 tiles, 2048 in 16 waves of 132 = 0.970, ramp 1.023), 6144³ at 741.1 (planner 790.1) → 1.9848 ms planned ÷
        // 2.0041 ms measured = 0.990. zzc0721/torch-performance-test-data issue 79, torch.matmul on "NVIDIA H100 80GB HBM3"
        // (the SXM part), PyTorch 2.7 + CUDA 12.8: 4096³ at 788.72, 8192³ at 797.51, 10240³ at 719.72 → 4.2884 ÷ 4.5367 ms
        // = 0.945. Mean 0.968.
        var bare = H100 with { LayerShapeGemmShare = 1 };
        double Share((double N, double Tflops)[] rows) =>
            rows.Sum(r => ComputeModel.GemmSeconds(bare, Precision.Bf16, r.N, r.N, r.N)) / rows.Sum(r => 2 * r.N * r.N * r.N / (r.Tflops * 1e12));
        Assert.Equal(786.6, 2 * Math.Pow(8192, 3) / ComputeModel.GemmSeconds(bare, Precision.Bf16, 8192, 8192, 8192) / 1e12, 1);
        double fastCu = Share([(8192, 797.8), (6144, 741.1)]);
        Assert.Equal(0.990, fastCu, 3);
        double torchMatmul = Share([(4096, 788.72), (8192, 797.51), (10240, 719.72)]);
        Assert.Equal(0.945, torchMatmul, 3);
        Assert.Equal((fastCu + torchMatmul) / 2, H100.LayerShapeGemmShare, 3);
        // The PCIe card has no published figure of its own and carries the SXM's shares.
        Assert.Equal(H100.LayerShapeGemmShare, GpuCatalog.Get("H100-PCIe").LayerShapeGemmShare);
    }

    [Fact]
    public void SkinnyGemmIsMemoryBound()
    {
        // 16384×16 output, K 16384: bytes 2·(16384² + 2·16384·16) = 537,919,488 at 2039e9 × 0.88 B/s = 2.99790e-4 s;
        // compute 8.59e9 FLOPs at 268 TFLOP/s × 0.1975 (64×64 tiles, 3 waves) = 1.62e-4 s < memory time.
        Assert.Equal(2.99790e-4, ComputeModel.GemmSeconds(A100, Precision.Bf16, 16384, 16, 16384), 8);
    }

    [Fact]
    public void FlashAttentionAtItsPublishedThroughput()
    {
        // 32 heads, s 4096, d 128, b 1, TP 1: causal forward 4·32·4096²·128/2 = 1.37439e11 FLOPs; forward + backward (2.5×)
        // = 3.5 × 1.37439e11 / 335e12 = 1.43593 ms on H100.
        var m = new ModelSpec("attn", 1, 4096, 32, 32, 4 * 4096, 32000);
        var layer = ComputeModel.Layer(m, new TrainingRun(4096, 1e9, 1), new ParallelLayout(Tp: 1, Recompute: Recompute.Selective), H100);
        Assert.Equal(1.43593e-3, layer.Attention, 8);
        // Unfused attention is slower than FlashAttention at this length (QKᵀ/AV with K = 128, 9+11 bytes per score element).
        var unfused = ComputeModel.Layer(m, new TrainingRun(4096, 1e9, 1, Attention: AttentionKernel.Unfused), new ParallelLayout(Tp: 1, Recompute: Recompute.None), H100);
        Assert.True(unfused.Attention > layer.Attention);
    }

    [Fact]
    public void FullRecomputationRepeatsTheForward()
    {
        var m = ModelCatalog.Get("gpt3-175b");
        var run = new TrainingRun(2048, 1e9, 8);
        var none = ComputeModel.Layer(m, run, new ParallelLayout(Tp: 8, Recompute: Recompute.None), A100);
        var full = ComputeModel.Layer(m, run, new ParallelLayout(Tp: 8, Recompute: Recompute.Full), A100);
        Assert.Equal(0, none.Recompute);
        Assert.Equal(full.Forward, full.Recompute, 15);
        Assert.Equal(none.Forward + none.Backward + none.Forward, full.Total, 12);
    }

    [Fact]
    public void GradientAccumulationIsTenBytesPerParameterPerMicroBatch()
    {
        // bf16 wgrad read (2) + fp32 main grad read and write (4 + 4).
        Assert.Equal(10, ComputeModel.GradAccumulationBytesPerParam);
        // One GPT-3 layer on TP 8: 12·12288²/8 = 226,492,416 parameters × 10 B / (2039e9 × 0.88) = 1.2622742 ms per micro-batch,
        // the difference between the stage's backward and the layer's own backward.
        var m = ModelCatalog.Get("gpt3-175b") with { Layers = 2 };
        var run = new TrainingRun(2048, 1e9, 8);
        var l = new ParallelLayout(Tp: 8, Pp: 2, Recompute: Recompute.None);
        var layer = ComputeModel.Layer(m, run, l, A100);
        var head = ComputeModel.OutputLayer(m, run, l, A100);
        var stage = ComputeModel.Stage(m, run, l, A100); // last stage: 1 layer + output layer
        Assert.Equal(layer.Backward + 1.2622742e-3 + head.Backward, stage.Backward, 8);
        // Fused into the wgrad GEMM (Megatron-LM 2022 on): no pass. fp16 in place (Megatron-LM 2021): 6 B, 0.7573646 ms.
        Assert.Equal(0, ComputeModel.AccumulationBytesPerParam(GradAccumulation.FusedIntoGemm));
        var fused = run with { GradAccumulation = GradAccumulation.FusedIntoGemm };
        Assert.Equal(layer.Backward + ComputeModel.OutputLayer(m, fused, l, A100).Backward, ComputeModel.Stage(m, fused, l, A100).Backward, 8);
        var fp16 = run with { GradAccumulation = GradAccumulation.Fp16InPlace };
        Assert.Equal(layer.Backward + 0.7573646e-3 + ComputeModel.OutputLayer(m, fp16, l, A100).Backward, ComputeModel.Stage(m, fp16, l, A100).Backward, 8);
        // DeepSpeed BF16_Optimizer (BLOOM): cast to fp32 (read 2, write 4) + add (read 4 + 4, write 4) = 18 B, 2.2720936 ms.
        Assert.Equal(18, ComputeModel.AccumulationBytesPerParam(GradAccumulation.Bf16ViaFp32Copy));
        var ds = run with { GradAccumulation = GradAccumulation.Bf16ViaFp32Copy };
        Assert.Equal(layer.Backward + 2.2720936e-3 + ComputeModel.OutputLayer(m, ds, l, A100).Backward, ComputeModel.Stage(m, ds, l, A100).Backward, 8);
    }

    [Fact]
    public void AnUngatedLayerWithoutBiasesHasRotaryInsteadOfGptPasses()
    {
        // Nemotron-4 340B's layer (h 18432, 96 heads of 192, 8 KV heads, squared-ReLU MLP 73728, no biases, no dropout, rotary)
        // on H100, TP 8 with sequence parallelism, FlashAttention, b·s = 4096 tokens. GPT-style passes per token (bytes):
        // QKV out 2304 + 2·192 = 2688, MLP up 9216, hs 2304; forward 2·2688·2 + 2·2304·1 = 15360, backward
        // (2688 + 9216 + 2·2304)·2 + 2·2304 + 2·2·2304·2 = 56064. Rotary instead: 2·(2304 + 192)·2 = 9984 forward, 19968 backward.
        // Difference: 4096·(15360 + 56064 − 9984 − 19968) / (3350e9 · 0.90) = 5.6341397e-5 s per micro-batch.
        var gpt = new ModelSpec("nemotron-shape", 1, 18432, 96, 8, 73728, 256000);
        var nemotron = gpt with { GptStyle = false };
        Assert.True(gpt.GptStyle);
        Assert.False(nemotron.GptStyle);
        Assert.False(new ModelSpec("llama", 1, 4096, 32, 8, 14336, 32000, GatedFfn: true).GptStyle);
        var run = new TrainingRun(4096, 1e9, 8);
        var l = new ParallelLayout(Tp: 8, Recompute: Recompute.Selective);
        double difference = ComputeModel.Layer(gpt, run, l, H100).MemoryBound - ComputeModel.Layer(nemotron, run, l, H100).MemoryBound;
        Assert.Equal(5.6341397e-5, difference, 11);
    }

    [Fact]
    public void UnevenEndsHoldOneLayerFewerOnTheFirstAndLastStage()
    {
        // Llama 3: 126 layers on 16 stages → (126 + 2)/16 = 8 on the middle stages, 7 on the first and last.
        var l = new ParallelLayout(Tp: 8, Pp: 16, UnevenEnds: true);
        Assert.Equal(8, l.LayersPerMiddleStage(126));
        Assert.Equal(7, l.LayersOnLastStage(126));
        var m = ModelCatalog.Get("llama3-405b");
        var run = new TrainingRun(8192, 1e12, 2048);
        var cluster = new ClusterSpec(H100, 16384);
        Assert.Throws<BadInputException>(() => Planner.ValidateLayout(m, run, cluster, l with { UnevenEnds = false, Dp = 128 }));
        Planner.ValidateLayout(m, run, cluster, l with { Dp = 128 });
    }

    [Fact]
    public void PipelineBubbleStaysOneSlotPerStageWithTheOutputLayer()
    {
        // The slowest stage sets the slot: with 4 stages of a 12-layer model the last (3 layers + logits) is slowest, and
        // the step is (m + p − 1) of its slots (TP = DP = 1, nothing else on the step but the optimizer).
        var m = ModelCatalog.Get("gpt2-124m");
        var inputs = PlanTestData.Inputs(m, "H100-SXM", 4, new ParallelLayout(Tp: 1, Pp: 4, Dp: 1), batchSequences: 12);
        var step = StepTimeModel.Estimate(m, inputs.Run, inputs.Layout, inputs.Cluster, inputs.Overlap);
        double slot = ComputeModel.Stage(m, inputs.Run, inputs.Layout, inputs.Cluster.Gpu).Total;
        Assert.Equal(12 * slot, step.Compute, 12);
        Assert.Equal(3 * slot, step.Bubble, 12);
    }

    [Fact]
    public void AJobOfANodeOrMoreRunsAtItsSlowestGpu()
    {
        // A100: GEMM 312 × 0.859 × 0.887 = 237.7231 TFLOP/s on one GPU; a job of ≥ 8 GPUs runs at the slowest, 2.5% lower: 231.7800.
        // FlashAttention 190 → 185.25; HBM streaming unchanged (clock-bound rates only).
        var one = new ClusterSpec(A100, 4);
        var node = new ClusterSpec(A100, 8);
        Assert.Same(A100, one.PacingGpu);
        Assert.Equal(231.7800186e12, node.PacingGpu.GemmFlops(Precision.Bf16), 1e6);
        Assert.Equal(185.25e12, node.PacingGpu.FlashAttentionFlops, 1e6);
        Assert.Equal(A100.StreamBytesPerSecond, node.PacingGpu.StreamBytesPerSecond);
        // The step's compute is its micro-batches on the pacing GPU: GPT-2 124M, DP 8, 1 micro-batch of 12 sequences each.
        var m = ModelCatalog.Get("gpt2-124m");
        var inputs = PlanTestData.Inputs(m, "A100-80GB", 8, new ParallelLayout(Tp: 1, Dp: 8, MicroBatch: 12), batchSequences: 96);
        var step = StepTimeModel.Estimate(m, inputs.Run, inputs.Layout, inputs.Cluster, inputs.Overlap);
        Assert.Equal(ComputeModel.Stage(m, inputs.Run, inputs.Layout, inputs.Cluster.PacingGpu).Total, step.Compute, 12);
        Assert.True(step.Compute > ComputeModel.Stage(m, inputs.Run, inputs.Layout, A100).Total);
    }
}
