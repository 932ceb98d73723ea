using Supercluster.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace Supercluster.Inference;

/// <summary>
/// Text embeddings from a causal LM: the mean over positions of the final hidden states (after the last norm),
/// L2-normalised, so cosine similarity is a dot product. Mean pooling (rather than the last token's state) uses
/// every token's state: with a causal model the early tokens see little context, but averaging is robust for
/// models that were never trained for embeddings. Inputs longer than the context keep their first tokens.
/// </summary>
public sealed class Embedder(CausalLM model, Device device, int maxBatch = 16)
{
    readonly SemaphoreSlim _gate = new(1);

    public int Dimension => model.Config.NEmbd;
    public int Context => model.Config.SeqLen;

    /// <summary>One unit vector per input (inputs of equal length are batched together).</summary>
    public float[][] Embed(IReadOnlyList<int[]> inputs)
    {
        var result = new float[inputs.Count][];
        var groups = Enumerable.Range(0, inputs.Count)
            .Select(i => (Index: i, Ids: inputs[i].Length > Context ? inputs[i][..Context] : inputs[i]))
            .GroupBy(x => x.Ids.Length);
        _gate.Wait();
        try
        {
            using var _ = no_grad();
            foreach (var group in groups)
            {
                if (group.Key == 0) throw new BadInputException("cannot embed an empty input");
                foreach (var chunk in group.Chunk(maxBatch))
                {
                    using var scope = NewDisposeScope();
                    var flat = chunk.SelectMany(x => x.Ids.Select(t => (long)t)).ToArray();
                    var ids = tensor(flat, device: device).view(chunk.Length, group.Key);
                    var h = model.Hidden(ids).to(ScalarType.Float32).mean([1L]);                     // [B, d]
                    h = nn.functional.normalize(h, p: 2, dim: 1).cpu();
                    var data = h.data<float>().ToArray();
                    for (int r = 0; r < chunk.Length; r++) result[chunk[r].Index] = data.AsSpan(r * Dimension, Dimension).ToArray();
                }
            }
        }
        finally { _gate.Release(); }
        return result;
    }
}
