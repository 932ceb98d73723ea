namespace Supercluster.Planning;

/// <summary>
/// Memory traffic of the loss on the last stage, per logit element (T × V/t of them), as Megatron-LM's vocab-parallel
/// cross-entropy runs it (<c>megatron/mpu/cross_entropy.py</c> 2021, <c>core/tensor_parallel/cross_entropy.py</c> today;
/// the GPT model calls it on <c>output.float()</c>). Each line is one pass over the logits:
/// forward: upcast bf16/fp16 → fp32 (read 2, write 4), max (read 4), subtract the max in place (read 4, write 4),
/// exp in place (read 4, write 4), sum (read 4), divide by the sum in place to keep the softmax for the backward
/// (read 4, write 4) = 38 bytes; backward: softmax − one-hot scaled by the incoming gradient in place (read 4, write 4),
/// downcast to bf16/fp16 for the logit GEMMs (read 4, write 2) = 14 bytes. The TP all-reduces of the max and the sum
/// carry T values each and are ignored.
/// </summary>
public static class CrossEntropyTraffic
{
    public const double ForwardBytesPerLogit = 6 + 4 + 8 + 8 + 4 + 8;
    public const double BackwardBytesPerLogit = 8 + 6;
}
