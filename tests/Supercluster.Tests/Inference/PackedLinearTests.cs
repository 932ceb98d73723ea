using System.Runtime.Intrinsics;
using Supercluster.Inference;
using Supercluster.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace Supercluster.Tests.Inference;

/// <summary>The scheduler's C# projection for few rows (PackedLinear) against libtorch's linear, the reference path.</summary>
public class PackedLinearTests
{
    public PackedLinearTests() => TorchSetup.Init();

    /// <summary>
    /// Row counts around the 4-row blocks and outputs around the 64- and 16-wide blocks (100 = 64 + 32 + 4 one by one),
    /// with and without a bias: equal to <c>linear</c> to 1e-5 of the outputs' scale (float32 sums in another order; a
    /// wrong row, column or bias is off by O(1)).
    /// </summary>
    [Theory]
    [InlineData(128, 384, true)]
    [InlineData(40, 100, true)]
    [InlineData(512, 128, false)]
    public void Equals_linear(int inFeatures, int outFeatures, bool bias)
    {
        if (!Vector512.IsHardwareAccelerated) return;                      // no 512-bit vectors: Takes is false, libtorch runs
        using var _ = no_grad();
        var gen = new Generator(7);
        var linear = nn.Linear(inFeatures, outFeatures, hasBias: bias);
        using var packed = new PackedLinear(linear);
        foreach (int rows in new[] { 1, 3, 4, 5, 16, 17, PackedLinear.MaxRows })
        {
            var x = randn([rows, inFeatures], generator: gen).view(1, rows, inFeatures);
            Assert.Equal(rows >= PackedLinear.MinRows, packed.Takes(x));
            var want = linear.call(x);
            var got = packed.Forward(x);
            Assert.Equal(want.shape, got.shape);
            double err = (want - got).abs().max().item<float>(), scale = want.abs().max().item<float>();
            Assert.True(err <= 1e-5 * scale, $"{inFeatures}→{outFeatures}, {rows} rows: {err:E2} of {scale:F2}");
        }
    }

    [Fact]
    public void Leaves_to_libtorch_what_it_does_not_take()
    {
        var linear = nn.Linear(16, 32);
        using var packed = new PackedLinear(linear);
        using (no_grad())
        {
            Assert.True(packed.Takes(zeros(PackedLinear.MinRows, 16)));
            Assert.False(packed.Takes(zeros(PackedLinear.MaxRows + 1, 16)));                  // a long prompt chunk
            Assert.False(packed.Takes(zeros(4, 16, dtype: ScalarType.Float64)));
            Assert.False(packed.Takes(zeros(16, 4).t()));                                      // not contiguous
        }
        Assert.False(packed.Takes(zeros(4, 16)));                                               // autograd on: no backward here
    }

    /// <summary>
    /// Whole GPT-2 decode steps through a cache with packed projections give the logits of one without (both on the C#
    /// attention path), to 1e-5, over prompts of different lengths: the projections are wired to the right modules.
    /// </summary>
    [Fact]
    public void Decode_steps_with_packed_projections_give_the_logits_of_libtorch_linear()
    {
        var config = new ModelConfig { Family = ModelFamily.Gpt2, VocabSize = 40, SeqLen = 32, NLayer = 2, NHead = 4, NKvHead = 4, NEmbd = 64, FfnHidden = 256 };
        using var model = CausalLM.Create(config, seed: 4);
        model.eval();
        using var _ = no_grad();
        var ids = randint(0, 40, [5, 20], generator: new Generator(5));
        int[] prompts = [2, 9, 5, 1, 12];                                      // 5 rows: a block of 4 and one alone
        var plain = new BatchKvCache(config, 6, CPU, ScalarType.Float32);
        var packed = new BatchKvCache(config, 6, CPU, ScalarType.Float32);
        Assert.True(packed.PackProjections(model));                           // as the scheduler does
        var caches = new[] { plain, packed };
        foreach (var cache in caches)
            for (int i = 0; i < prompts.Length; i++)
            {
                int slot = cache.Rent();
                cache.Begin([slot], prompts[i]);
                model.Forward(ids[i].narrow(0, 0, prompts[i]).unsqueeze(0), cache);
            }
        for (int step = 0; step < 6; step++)
        {
            var next = cat(Enumerable.Range(0, 5).Select(i => ids[i].narrow(0, prompts[i] + step, 1).unsqueeze(0)).ToArray());   // [5, 1]
            var logits = caches.Select(c => { c.Begin([0, 1, 2, 3, 4], 1); return model.Forward(next, c); }).ToArray();
            double err = (logits[0] - logits[1]).abs().max().item<float>();
            Assert.True(err <= 1e-5, $"step {step}: {err:E2}");
        }
        foreach (var c in caches) c.Dispose();
    }
}
