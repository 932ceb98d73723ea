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
}
