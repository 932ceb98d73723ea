using Supercluster.Data;
using Supercluster.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace Supercluster.Training;

/// <summary>Mean next-token cross-entropy of a model over the first tokens of a split.</summary>
public static class Evaluator
{
    /// <summary>Loss (nats/token) over ⌈tokens / (B·T)⌉ batches from the start of <paramref name="loader"/>'s split.</summary>
    public static double Loss(CausalLM model, TokenDataLoader loader, int batchSize, int seqLen, long tokens, Device device)
    {
        loader.Reset();
        long batches = Math.Max(1, Math.Min((tokens + (long)batchSize * seqLen - 1) / ((long)batchSize * seqLen),
                                            loader.TokensPerEpoch / ((long)batchSize * seqLen)));
        var x = new long[batchSize * seqLen];
        var y = new long[batchSize * seqLen];
        bool wasTraining = model.training;
        model.eval();
        double sum = 0;
        using (no_grad())
        {
            for (long i = 0; i < batches; i++)
            {
                using var scope = NewDisposeScope();
                loader.NextBatch(x, y);
                sum += NextTokenLoss.Batch(model, x, y, batchSize, seqLen, device).item<float>();
            }
        }
        if (wasTraining) model.train();
        return sum / batches;
    }
}
