using Supercluster.Inference;
using Supercluster.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace Supercluster.Tests.Inference;

/// <summary>The decode step's C# attention loop against libtorch's SDPA with the step's mask (the reference path).</summary>
public class DecodeAttentionTests
{
    public DecodeAttentionTests() => TorchSetup.Init();

    /// <summary>
    /// Rows at different lengths in scattered slots, query heads sharing key/value heads (GQA, 4 over 2), q strided as the
    /// model's split/transpose leaves it: equal to SDPA over the gathered slots with a mask hiding each row's later keys.
    /// Float32 with an exp of a few ulps: agreement to 1e-5 (a wrong key, head or length is off by O(0.1)).
    /// </summary>
    [Theory]
    [InlineData(32)]
    [InlineData(8)]                                                                            // one vector per head
    public void Equals_sdpa_with_the_decode_mask(long hd)
    {
        if (!DecodeAttention.Supported(zeros(1, 1, 1, 8), zeros(1, 1, 1, 8))) return;          // no 256-bit vectors: the reference path runs instead
        var gen = new Generator(3);
        long h = 4, hkv = 2, context = 40;
        var kSlab = randn([6, hkv, context, hd], generator: gen);
        var vSlab = randn([6, hkv, context, hd], generator: gen);
        int[] slots = [4, 0, 2];
        long[] keys = [1, 17, 40];
        var qkv = randn([3, 1, 3 * h * hd], generator: gen) * 2;                                   // [B, 1, 3·H·hd]: q is a strided view of it
        var q = qkv.narrow(2, 0, h * hd).view(3, 1, h, hd).transpose(1, 2);                       // [B, H, 1, hd]
        var got = DecodeAttention.Run(q, kSlab, vSlab, slots, keys);
        var index = tensor(slots.Select(s => (long)s).ToArray());
        var k = kSlab.index_select(0, index).repeat_interleave(h / hkv, dim: 1);                  // [B, H, context, hd]
        var v = vSlab.index_select(0, index).repeat_interleave(h / hkv, dim: 1);
        var mask = arange(context).view(1, 1, 1, -1) < tensor(keys).view(-1, 1, 1, 1);           // [B, 1, 1, context]
        var expected = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask: mask);
        Assert.Equal(expected.shape, got.shape);
        double err = (got - expected).abs().max().item<float>();
        Assert.True(err <= 1e-5, $"max difference {err:E2}");
    }

    /// <summary>
    /// The C# key/value write equals index_copy_ of the reshaped rows into the flat slab, bit for bit (a copy): x strided as
    /// the model's split/transpose leaves it, rows scattered over slots, heads and positions. A wrong row or head moves
    /// whole vectors, so equality is exact.
    /// </summary>
    [Fact]
    public void Write_equals_index_copy_into_the_flat_slab()
    {
        var gen = new Generator(6);
        long b = 3, hkv = 2, hd = 16, context = 10;
        var kv = randn([b, 1, 2 * hkv * hd], generator: gen);                                     // [B, 1, 2·H·hd]: x is a strided view of it
        var x = kv.narrow(2, hkv * hd, hkv * hd).view(b, 1, hkv, hd).transpose(1, 2);            // [B, H_kv, 1, hd]
        long[] rows = [(4 * hkv + 0) * context + 3, (4 * hkv + 1) * context + 3, 0, 1 * context + 9, (2 * hkv + 1) * context + 5, (2 * hkv + 0) * context + 5];
        var expected = zeros(6, hkv, context, hd);
        expected.view(-1, hd).index_copy_(0, tensor(rows), x.reshape(-1, hd));
        var got = zeros(6, hkv, context, hd);
        DecodeAttention.Write(x, got, rows);
        Assert.True(got.equal(expected).all().item<bool>());
        Assert.Throws<ArgumentOutOfRangeException>(() => DecodeAttention.Write(x, got, [0, 1, 2, 3, 4, 6 * hkv * context]));
    }

    /// <summary>
    /// Whole decode steps of both families (float32, head size 8) with the C# attention give the logits of the SDPA path,
    /// batch rows at different lengths.
    /// </summary>
    [Theory]
    [InlineData(ModelFamily.Gpt2)]
    [InlineData(ModelFamily.Llama)]
    public void Decode_steps_with_it_give_the_logits_of_the_sdpa_path(ModelFamily family)
    {
        var config = new ModelConfig
        {
            Family = family, VocabSize = 40, SeqLen = 32, NLayer = 2, NHead = 4, NKvHead = family == ModelFamily.Llama ? 2 : 4, NEmbd = 32, FfnHidden = 64,
        };
        using var model = CausalLM.Create(config, seed: 4);
        model.eval();
        using var _ = no_grad();
        var ids = randint(0, 40, [3, 20], generator: new Generator(5));
        int[] prompts = [2, 9, 5];
        var caches = new[] { new BatchKvCache(config, 4, CPU, ScalarType.Float32) { FastDecode = false }, new BatchKvCache(config, 4, CPU, ScalarType.Float32) };
        foreach (var cache in caches)
            for (int i = 0; i < 3; i++)
            {
                int slot = cache.Rent();
                cache.Begin([slot], prompts[i]);
                model.Forward(ids[i].narrow(0, 0, prompts[i]).unsqueeze(0), cache);
            }
        for (int step = 0; step < 6; step++)
        {
            var next = cat(Enumerable.Range(0, 3).Select(i => ids[i].narrow(0, prompts[i] + step, 1).unsqueeze(0)).ToArray());   // [3, 1]
            var logits = caches.Select(c => { c.Begin([0, 1, 2], 1); return model.Forward(next, c); }).ToArray();
            double err = (logits[0] - logits[1]).abs().max().item<float>();
            Assert.True(err <= 1e-5, $"{family}, step {step}: {err:E2}");
        }
        foreach (var c in caches) c.Dispose();
    }
}
