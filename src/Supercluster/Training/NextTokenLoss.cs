using Supercluster.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace Supercluster.Training;

/// <summary>The language-modelling loss, in one place for training, benchmarking and evaluation.</summary>
public static class NextTokenLoss
{
    /// <summary>Mean cross-entropy of next-token predictions over ids x [B·T] → targets y [B·T] (fp32 logits under any compute dtype).</summary>
    public static Tensor Batch(CausalLM model, long[] x, long[] y, int batchSize, int seqLen, Device device)
    {
        var input = tensor(x, [batchSize, seqLen], device: device);
        var target = tensor(y, [batchSize * seqLen], device: device);
        var logits = model.forward(input);                                   // [B, T, V]
        return nn.functional.cross_entropy(logits.view(-1, logits.shape[2]).to(ScalarType.Float32), target);
    }
}
