using Supercluster.Inference;
using Supercluster.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace Supercluster.Tests.Inference;

/// <summary>The batch cache's decode fast path (host-built mask and positions, one index_copy_ per layer) against one sequence alone.</summary>
public class BatchKvCacheTests
{
    public BatchKvCacheTests() => TorchSetup.Init();

    /// <summary>
    /// Three sequences at different lengths in non-consecutive slots (the gathered read) and then consecutive ones (the
    /// in-place read), decoded together step by step, give each sequence's logits as the plain single-sequence
    /// <see cref="KvCache"/> does. Float64, so only the different matmul shapes' rounding separates them (≤ 1e-12).
    /// </summary>
    [Theory]
    [InlineData(ModelFamily.Gpt2)]
    [InlineData(ModelFamily.Llama)]
    public void Batched_decode_steps_equal_each_sequence_decoded_alone(ModelFamily family)
    {
        var config = family == ModelFamily.Gpt2 ? TorchSetup.TinyGpt2(vocab: 40, ctx: 32) : TorchSetup.TinyLlama(vocab: 40, ctx: 32);
        using var model = CausalLM.Create(config, seed: 5);
        model.to(ScalarType.Float64);
        model.eval();
        using var _ = no_grad();
        var gen = new Generator(7);
        int[] prompts = [3, 7, 5];
        var tokens = Enumerable.Range(0, 3).Select(_ => randint(0, 40, [1, 20], generator: gen)).ToArray();   // each sequence's ids
        foreach (bool consecutive in new[] { false, true })
        {
            using var batch = new BatchKvCache(config, slots: 5, CPU, ScalarType.Float64);
            var singles = Enumerable.Range(0, 3).Select(_ => new KvCache(config, 1, CPU, ScalarType.Float64)).ToArray();
            int[] slots = consecutive ? [batch.Rent(), batch.Rent(), batch.Rent()] : [batch.Rent(), Skip(batch), batch.Rent(), Skip(batch), batch.Rent()];
            slots = slots.Where(s => s >= 0).ToArray();
            for (int i = 0; i < 3; i++)
            {
                batch.Begin([slots[i]], prompts[i]);
                model.Forward(tokens[i].narrow(1, 0, prompts[i]), batch);
                model.Forward(tokens[i].narrow(1, 0, prompts[i]), singles[i]);
            }
            for (int step = 0; step < 10; step++)
            {
                batch.Begin(slots, 1);
                var ids = cat(Enumerable.Range(0, 3).Select(i => tokens[i].narrow(1, prompts[i] + step, 1)).ToArray());   // [3, 1]
                var logits = model.Forward(ids, batch);                                                                    // [3, 1, V]
                for (int i = 0; i < 3; i++)
                {
                    var alone = model.Forward(tokens[i].narrow(1, prompts[i] + step, 1), singles[i]);
                    double err = (logits[i] - alone[0]).abs().max().item<double>();
                    Assert.True(err <= 1e-12, $"{family}, consecutive {consecutive}, step {step}, row {i}: {err:E2}");
                }
            }
            batch.End();
            foreach (var s in singles) s.Dispose();
        }
    }

    /// <summary>Rents a slot and marks it to be left out (-1): a gap between the rows' slots.</summary>
    static int Skip(BatchKvCache cache) { cache.Rent(); return -1; }
}
