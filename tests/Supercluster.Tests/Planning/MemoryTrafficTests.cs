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
}
