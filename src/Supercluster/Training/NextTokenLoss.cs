using Supercluster.FineTuning;
using Supercluster.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace Supercluster.Training;

/// <summary>The language-modelling loss, in one place for training, benchmarking and evaluation.</summary>
public static class NextTokenLoss
{
    /// <summary>Mean cross-entropy of next-token predictions over ids x [B·T] → targets y [B·T] (fp32 logits under any compute dtype).</summary>
    /// <param name="loss">The loss of a parallelised model (ids [B, T], targets [B·T]), e.g. <see cref="Parallelism.ParallelModel.Loss"/>; null: the model's own logits.</param>
    public static Tensor Batch(CausalLM model, long[] x, long[] y, int batchSize, int seqLen, Device device, Func<Tensor, Tensor, Tensor>? loss = null)
    {
        var input = tensor(x, [batchSize, seqLen], device: device);
        var target = tensor(y, [batchSize * seqLen], device: device);
        return loss is null ? FromLogits(model.forward(input), target) : loss(input, target);
    }

    /// <summary>Mean cross-entropy of logits [B, T, V] against targets [B·T], in fp32.</summary>
    public static Tensor FromLogits(Tensor logits, Tensor target) =>
        nn.functional.cross_entropy(logits.view(-1, logits.shape[2]).to(ScalarType.Float32), target);

    /// <summary>
    /// Sum (not mean: the caller divides by the global count) of the cross-entropy over the targets whose mask is 1;
    /// the others are ignored whatever their ids. With <paramref name="documentEnd"/>, attention stays within the
    /// documents that end-of-text tokens delimit (<see cref="DocumentMask"/>).
    /// </summary>
    public static Tensor MaskedSum(CausalLM model, long[] x, long[] y, byte[] trained, int batchSize, int seqLen, Device device, long? documentEnd)
    {
        var input = tensor(x, [batchSize, seqLen], device: device);
        var ignored = new long[y.Length];
        for (int i = 0; i < y.Length; i++) ignored[i] = trained[i] != 0 ? y[i] : IgnoreIndex;
        var target = tensor(ignored, [batchSize * seqLen], device: device);
        using var documents = documentEnd is { } eot ? new DocumentMask(x, batchSize, seqLen, eot, device) : null;
        var logits = model.Forward(input, documents);                        // [B, T, V]
        return nn.functional.cross_entropy(logits.view(-1, logits.shape[2]).to(ScalarType.Float32), target,
            ignore_index: IgnoreIndex, reduction: nn.Reduction.Sum);
    }

    const long IgnoreIndex = -100;   // PyTorch's default ignore_index
}
