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

    /// <summary>
    /// The mixed forward (<see cref="BatchKvCache.BeginMixed"/>: three decode rows and two prompt chunks, one starting a
    /// prompt and one continuing a half-prefilled one, side by side as one [1, N] sequence) gives the logits and leaves the
    /// keys/values that a decode forward followed by a separate padded prefill forward give. Float32, as served: the two
    /// paths multiply matrices of different shapes, so they agree to rounding (≤ 1e-5; a misplaced key or position
    /// differs by O(0.1)).
    /// </summary>
    /// <summary>
    /// Moving a slot (the scheduler filling a finished sequence's hole) carries its keys/values and length exactly,
    /// in float32 (the C# copy) and float64 (the libtorch copy), GQA heads; the source slot is freed.
    /// </summary>
    [Theory]
    [InlineData(ScalarType.Float32)]
    [InlineData(ScalarType.Float64)]
    public void Move_carries_a_slot_exactly(ScalarType dtype)
    {
        var config = TorchSetup.TinyLlama(vocab: 40, ctx: 32);
        using var cache = new BatchKvCache(config, 4, CPU, dtype);
        int[] slots = [cache.Rent(), cache.Rent(), cache.Rent()];
        var gen = new Generator(9);
        long hkv = config.NKvHead, hd = config.HeadDim;
        var expected = new List<(Tensor K, Tensor V)>();
        for (int l = 0; l < config.NLayer; l++)
        {
            var k = randn([hkv, 11, hd], generator: gen).to(dtype);
            var v = randn([hkv, 11, hd], generator: gen).to(dtype);
            cache.Write(l, slots[2], 0, k, v);
            expected.Add((k, v));
        }
        cache.SetLength(slots[2], 11);
        cache.Release(slots[0]);
        cache.Move(slots[2], slots[0]);
        Assert.Equal(11, cache.LengthOf(slots[0]));
        Assert.Equal(0, cache.LengthOf(slots[2]));
        Assert.Equal(slots[2], cache.Rent());                                                  // freed (the lowest free slot)
        for (int l = 0; l < config.NLayer; l++)
        {
            var (k, v) = cache.View(l, slots[0], 0, 11);
            Assert.True(k.equal(expected[l].K).all().item<bool>() && v.equal(expected[l].V).all().item<bool>(), $"layer {l}");
        }
    }

    [Theory]
    [InlineData(ModelFamily.Gpt2)]
    [InlineData(ModelFamily.Llama)]
    public void Mixed_prefill_and_decode_forward_equals_the_separate_forwards(ModelFamily family)
    {
        // Head size 8: the mixed forward's decode rows take DecodeAttention; the separate forwards take SDPA (the reference).
        var config = new ModelConfig
        {
            Family = family, VocabSize = 40, SeqLen = 32, NLayer = 2, NHead = 4, NKvHead = family == ModelFamily.Llama ? 2 : 4, NEmbd = 32, FfnHidden = 64,
        };
        using var model = CausalLM.Create(config, seed: 9);
        model.eval();
        using var _ = no_grad();
        var gen = new Generator(11);
        var tokens = Enumerable.Range(0, 5).Select(_ => randint(0, 40, [1, 20], generator: gen)).ToArray();
        int[] cached = [3, 7, 5, 0, 4];                       // slots 0-2 decode; slot 3 starts its prompt, slot 4 continues one
        long[] chunk = [1, 1, 1, 6, 5];
        using var separate = new BatchKvCache(config, slots: 6, CPU, ScalarType.Float32) { FastDecode = false };
        using var mixed = new BatchKvCache(config, slots: 6, CPU, ScalarType.Float32);
        foreach (var cache in new[] { separate, mixed })
            for (int i = 0; i < 5; i++)
            {
                int slot = cache.Rent();
                if (cached[i] == 0) continue;
                cache.Begin([slot], cached[i]);
                model.Forward(tokens[i].narrow(1, 0, cached[i]), cache);
            }
        Tensor Next(int i) => tokens[i].narrow(1, cached[i], chunk[i]);                                          // [1, n]

        separate.Begin([0, 1, 2], 1);
        var decodeLogits = model.Forward(cat(Enumerable.Range(0, 3).Select(Next).ToArray()), separate);         // [3, 1, V]
        separate.Begin([3, 4], [6, 5]);
        var padded = cat([Next(3), cat([Next(4), zeros(1, 1, dtype: ScalarType.Int64)], 1)]);                   // [2, 6]
        var prefillLogits = model.Forward(padded, separate);                                                     // [2, 6, V]
        separate.End();

        mixed.BeginMixed([0, 1, 2], [(3, 6L), (4, 5L)]);
        var all = model.Forward(cat(Enumerable.Range(0, 5).Select(Next).ToArray(), 1), mixed)[0];              // [3 + 6 + 5, V]
        mixed.End();

        double Err(Tensor a, Tensor b) => (a - b).abs().max().item<float>();
        Assert.True(Err(all.narrow(0, 0, 3), decodeLogits.select(1, 0)) <= 1e-5, $"{family}: decode rows' logits differ");
        Assert.True(Err(all.narrow(0, 3, 6), prefillLogits[0]) <= 1e-5, $"{family}: first chunk's logits differ");
        Assert.True(Err(all.narrow(0, 9, 5), prefillLogits[1].narrow(0, 0, 5)) <= 1e-5, $"{family}: second chunk's logits differ");
        for (int slot = 0; slot < 5; slot++)
        {
            Assert.Equal(separate.LengthOf(slot), mixed.LengthOf(slot));
            Assert.Equal(cached[slot] + chunk[slot], mixed.LengthOf(slot));
            for (int layer = 0; layer < config.NLayer; layer++)
            {
                var (ks, vs) = separate.View(layer, slot, 0, separate.LengthOf(slot));
                var (km, vm) = mixed.View(layer, slot, 0, mixed.LengthOf(slot));
                Assert.True(Err(ks, km) <= 1e-5 && Err(vs, vm) <= 1e-5, $"{family}: slot {slot}, layer {layer}: keys/values differ");
            }
        }
    }

    /// <summary>Rents a slot and marks it to be left out (-1): a gap between the rows' slots.</summary>
    static int Skip(BatchKvCache cache) { cache.Rent(); return -1; }
}
