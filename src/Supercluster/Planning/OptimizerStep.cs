namespace Supercluster.Planning;

/// <summary>
/// Memory traffic of one mixed-precision Adam step, per parameter, as Megatron-LM's optimizer runs it
/// (<c>megatron/optimizer/optimizer.py</c> <c>MixedPrecisionOptimizer.step</c> with apex <c>FusedAdam</c>); every pass is
/// a memory-bound multi-tensor kernel at streaming bandwidth:
/// * fp16 only: unscale the fp32 main gradients and check them for inf/NaN (read 4, write 4);
/// * gradient-norm for clipping (<c>multi_tensor_l2norm</c>: read 4);
/// * Adam: read fp32 master weight, gradient, m and v (16), write master weight, m and v (12);
/// * copy the updated master weights into the bf16/fp16 model weights (read 4, write 2);
/// * zero the fp32 main-gradient buffer for the next step (write 4) — every local parameter, sharded or not.
/// The per-shard passes run on the parameters this GPU updates (1/DP of them with ZeRO-1 and up).
/// </summary>
public static class OptimizerStep
{
    public const double UnscaleBytesPerParam = 8, NormBytesPerParam = 4, AdamBytesPerParam = 28, CopyBytesPerParam = 6, ZeroGradBytesPerParam = 4;

    /// <summary>Seconds of the step on one GPU that updates <paramref name="updatedParams"/> of its <paramref name="localParams"/>.</summary>
    public static double Seconds(GpuSpec g, Precision p, double updatedParams, double localParams)
    {
        double perUpdated = (p == Precision.Fp16 ? UnscaleBytesPerParam : 0) + NormBytesPerParam + AdamBytesPerParam + CopyBytesPerParam;
        return (perUpdated * updatedParams + ZeroGradBytesPerParam * localParams) / g.StreamBytesPerSecond;
    }
}
