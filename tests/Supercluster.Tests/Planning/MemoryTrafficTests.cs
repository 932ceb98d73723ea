using Supercluster.Planning;

namespace Supercluster.Tests.Planning;

/// <summary>Hand-computed memory-bound terms: the loss's passes over the logits (CrossEntropyTraffic.cs) and the optimizer
/// step's passes over its state (OptimizerStep.cs).</summary>
public class MemoryTrafficTests
{
    static readonly GpuSpec A100 = GpuCatalog.Get("A100-80GB");

    [Fact]
    public void OptimizerStepBytes()
    {
        double bw = A100.StreamBytesPerSecond; // 2039 GB/s × 0.88
        // bf16: norm 4 + Adam 28 + copy 6 = 38 bytes per updated parameter, + 4 to zero every local gradient.
        Assert.Equal((38 * 1e9 + 4 * 2e9) / bw, OptimizerStep.Seconds(A100, Precision.Bf16, 1e9, 2e9), 12);
        // fp16 adds the unscale and inf/NaN check: 8 more per updated parameter.
        Assert.Equal((46 * 1e9 + 4 * 2e9) / bw, OptimizerStep.Seconds(A100, Precision.Fp16, 1e9, 2e9), 12);
    }

    [Fact]
    public void LossMovesFiftyTwoBytesPerLogit()
    {
        // Megatron's vocab-parallel cross-entropy: 38 bytes per logit forward, 14 backward. Output layer of a T = 2048-token
        // micro-batch, V = 51200 on one GPU: memory-bound part = 2048·51200·52 / bw + the logit weights' fp32 gradient
        // accumulation h·V·10 / bw.
        var m = new ModelSpec("t", 2, 1024, 8, 8, 4096, 51200);
        var run = new TrainingRun(2048, 1e9, 8);
        var head = ComputeModel.OutputLayer(m, run, new ParallelLayout(Tp: 1), A100);
        double bw = A100.StreamBytesPerSecond;
        Assert.Equal(2048.0 * 51200 * 52 / bw + 1024.0 * 51200 * 10 / bw, head.MemoryBound, 12);
        Assert.Equal(52, CrossEntropyTraffic.ForwardBytesPerLogit + CrossEntropyTraffic.BackwardBytesPerLogit);
    }

    [Fact]
    public void GptLayersAddTheirBiasDropoutAndCopyPasses()
    {
        // GPT-3 175B on TP 8 without sequence parallelism, unfused attention: QKV width 1536 + 2·1536 = 4608, MLP-up 6144, h 12288.
        // Forward: QKV bias add 2·4608·2 + two masks 2·12288·1 + context copy 2·1536·2 = 18432 + 24576 + 6144 = 49152 B/token.
        // Backward: bias gradients (4608 + 6144 + 2·12288)·2 = 70656, masks 24576, LayerNorm γ/β re-reads 4·12288·2 = 98304,
        // QKV gradient concatenation 2·4608·2 = 18432: 211968 B/token.
        var gpt3 = ModelCatalog.Get("gpt3-175b");
        Assert.Equal((49152.0, 211968.0), ComputeModel.GptLayerExtraBytesPerToken(gpt3, new ParallelLayout(Tp: 8, SequenceParallel: false), false));
        // With sequence parallelism the h-wide passes split by 8 (1536), and FlashAttention has no context copy or concatenation:
        // forward 18432 + 3072 = 21504; backward (4608 + 6144 + 3072)·2 + 3072 + 4·1536·2 = 43008.
        Assert.Equal((21504.0, 43008.0), ComputeModel.GptLayerExtraBytesPerToken(gpt3, new ParallelLayout(Tp: 8, SequenceParallel: true), true));
    }

    [Fact]
    public void LayerMemoryBoundTermByHand()
    {
        // h 1024, 8 heads of 128, ffn 4096, TP 1, T = 2048 tokens, no recomputation, unfused attention (its softmax is
        // attention time, not counted here). Every layer: norms 2·2·h·2 + residual adds 2·3·h·2 + GeLU 2·4h·2 = 36h = 36864
        // B/token forward, twice that backward (73728). GPT extras: forward 2·3072·2 + 2·1024 + 2·1024·2 = 18432; backward
        // (3072 + 4096 + 2048)·2 + 2048 + 4·1024·2 + 2·3072·2 = 40960. Total 2048 · (55296 + 114688) / bw.
        var m = new ModelSpec("t", 2, 1024, 8, 8, 4096, 51200);
        var run = new TrainingRun(2048, 1e9, 8, Attention: AttentionKernel.Unfused);
        var layer = ComputeModel.Layer(m, run, new ParallelLayout(Tp: 1, Recompute: Recompute.None), A100);
        Assert.Equal(2048.0 * (55296 + 114688) / A100.StreamBytesPerSecond, layer.MemoryBound, 12);
        // A gated (Llama-family) layer has no biases or dropout: only its own passes (SwiGLU 3·4096·2, rotary 2·(1024 + 1024)·2).
        var llama = m with { GatedFfn = true };
        double perToken = 8 * 1024 + 12 * 1024 + 3 * 4096 * 2 + 2 * 2048 * 2;
        Assert.Equal(2048.0 * 3 * perToken / A100.StreamBytesPerSecond, ComputeModel.Layer(llama, run, new ParallelLayout(Tp: 1, Recompute: Recompute.None), A100).MemoryBound, 12);
    }
}
