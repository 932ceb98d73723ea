using System.Runtime.Intrinsics;
using Supercluster.Inference;
using Supercluster.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace Supercluster.Tests.Inference;

/// <summary>The scheduler's whole decode step in C# (Gpt2Decoder) against the model's libtorch forward, the reference path.</summary>
public class Gpt2DecoderTests
{
    public Gpt2DecoderTests() => TorchSetup.Init();

    /// <summary>
    /// Decode steps of 5 rows (a block of 4 and one alone) in slots that are not consecutive, from prompts of different
    /// lengths, on a model with trained-looking weights (norm gains and biases away from 1 and 0) and a padded
    /// vocabulary: the C# step's logits equal the libtorch forward's (linear, SDPA) to 2e-5 of their scale at every
    /// step, so the keys and values it wrote are the reference's too. A wrong norm, GELU, residual add, position, head
    /// or cache row is off by far more.
    /// </summary>
    [Theory]
    [InlineData(16)]                                   // head size 16: the 512-bit attention's width
    [InlineData(8)]                                    // head size 8: half a vector
    public void Decode_steps_give_the_logits_of_the_libtorch_forward(int headDim)
    {
        if (!Vector512.IsHardwareAccelerated) return;                      // no 512-bit vectors: the step stays on libtorch
        var config = new ModelConfig { Family = ModelFamily.Gpt2, VocabSize = 70, SeqLen = 40, NLayer = 2, NHead = 4, NKvHead = 4, NEmbd = 4 * headDim, FfnHidden = 16 * headDim, PadVocabMultiple = 64 };
        using var model = CausalLM.Create(config, seed: 4);
        model.eval();
        using var _ = no_grad();
        var gen = new Generator(9);
        foreach (var (name, p) in model.named_parameters())
            p.add_(randn(p.shape, generator: gen) * (name.Contains("ln_") ? 0.3 : 0.05));
        Assert.NotEqual(config.VocabSize, config.PaddedVocab);
        var ids = randint(0, config.VocabSize, [5, 30], generator: gen);
        int[] prompts = [2, 9, 5, 1, 12];
        int[] slots = [0, 2, 3, 5, 6];                                         // holes at 1 and 4: not read in place
        var reference = new BatchKvCache(config, 8, CPU, ScalarType.Float32) { FastDecode = false, PackedLinears = false };
        var fast = new BatchKvCache(config, 8, CPU, ScalarType.Float32);
        Assert.True(fast.PackProjections(model));
        var caches = new[] { reference, fast };
        foreach (var cache in caches)
        {
            for (int s = 0; s < 8; s++) cache.Rent();
            foreach (int s in new[] { 1, 4, 7 }) cache.Release(s);
            for (int i = 0; i < prompts.Length; i++)
            {
                cache.Begin([slots[i]], prompts[i]);
                model.Forward(ids[i].narrow(0, 0, prompts[i]).unsqueeze(0), cache);
            }
        }
        for (int step = 0; step < 8; step++)
        {
            var next = cat(Enumerable.Range(0, 5).Select(i => ids[i].narrow(0, prompts[i] + step, 1).unsqueeze(0)).ToArray());   // [5, 1]
            reference.Begin(slots, 1);
            var want = model.Forward(next, reference);
            fast.Begin(slots, 1);
            var got = fast.WholeForward(next);                                 // what Gpt2.Forward returns first
            Assert.NotNull(got);
            Assert.Equal(want.shape, got.shape);
            double err = (want - got).abs().max().item<float>(), scale = want.abs().max().item<float>();
            Assert.True(err <= 2e-5 * scale, $"step {step}: {err:E2} of {scale:F2}");
            foreach (int s in slots) Assert.Equal(reference.LengthOf(s), fast.LengthOf(s));
        }
        foreach (var c in caches) c.Dispose();
    }

    /// <summary>What the C# step does not take goes through the model's layers: prompt chunks, the reference switch, more rows than it holds.</summary>
    [Fact]
    public void Leaves_to_libtorch_what_it_does_not_take()
    {
        if (!Vector512.IsHardwareAccelerated) return;
        var config = new ModelConfig { Family = ModelFamily.Gpt2, VocabSize = 40, SeqLen = 16, NLayer = 1, NHead = 2, NKvHead = 2, NEmbd = 32, FfnHidden = 64 };
        using var model = CausalLM.Create(config, seed: 1);
        model.eval();
        using var _ = no_grad();
        using var cache = new BatchKvCache(config, Gpt2Decoder.MaxRows + 1, CPU, ScalarType.Float32);
        Assert.True(cache.PackProjections(model));
        var all = Enumerable.Range(0, Gpt2Decoder.MaxRows + 1).Select(_ => cache.Rent()).ToArray();
        cache.Begin(all[..2], 3);
        Assert.Null(cache.WholeForward(zeros([2, 3], ScalarType.Int64)));     // a prefill
        cache.End();
        cache.Begin(all, 1);
        Assert.Null(cache.WholeForward(zeros([all.Length, 1], ScalarType.Int64)));
        cache.Begin(all[..2], 1);
        Assert.Null(cache.WholeForward(zeros([1, 2], ScalarType.Int64)));     // not [B, 1]: the layers' checks answer
        cache.WholeStep = false;
        Assert.Null(cache.WholeForward(zeros([2, 1], ScalarType.Int64)));
        cache.WholeStep = true;
        Assert.NotNull(cache.WholeForward(zeros([2, 1], ScalarType.Int64)));
    }
}
