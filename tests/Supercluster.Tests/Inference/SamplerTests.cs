using Supercluster.Inference;
using Supercluster.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace Supercluster.Tests.Inference;

public class SamplerTests
{
    public SamplerTests() => TorchSetup.Init();

    [Theory]
    [InlineData(ModelFamily.Gpt2, 0.0)]
    [InlineData(ModelFamily.Gpt2, 1.0)]
    [InlineData(ModelFamily.Llama, 0.0)]
    [InlineData(ModelFamily.Llama, 0.9)]
    public void Kv_cache_sampling_equals_uncached_sampling(ModelFamily family, double temperature)
    {
        var config = (family == ModelFamily.Gpt2 ? TorchSetup.TinyGpt2(vocab: 50, ctx: 48) : TorchSetup.TinyLlama(vocab: 50, ctx: 48));
        using var model = CausalLM.Create(config, seed: 8);
        model.to(ScalarType.Float64); // rounding differences between the two paths stay far below sampling boundaries
        var o = new SamplingOptions { MaxNewTokens = 40, Temperature = temperature, TopK = 20, TopP = 0.95, Seed = 3 };
        int[] prompt = [1, 2, 3];
        var cached = Sampler.Generate(model, prompt, o, CPU);
        var uncached = Sampler.Generate(model, prompt, o with { UseCache = false }, CPU);
        Assert.Equal(43, cached.Length);
        Assert.Equal(uncached, cached);
    }

    [Fact]
    public void Cached_logits_match_a_full_forward_pass()
    {
        var config = TorchSetup.TinyLlama(vocab: 30, ctx: 20);
        using var model = CausalLM.Create(config, seed: 1);
        model.eval();
        using var _ = no_grad();
        var idx = randint(0, 30, [1, 12], generator: new Generator(4));
        var full = model.forward(idx);
        using var cache = new KvCache(config, 1, CPU, ScalarType.Float32);
        var first = model.Forward(idx[.., ..5], cache);               // prefill 5
        var mid = model.Forward(idx[.., 5..9], cache);                // 4 more at once (explicit mask path)
        var last = model.Forward(idx[.., 9..], cache);                // the rest
        var stitched = cat([first, mid, last], dim: 1);
        Assert.True(full.allclose(stitched, rtol: 1e-4, atol: 1e-5));
    }

    [Fact]
    public void Seeds_make_samples_reproducible_and_different_seeds_differ()
    {
        using var model = CausalLM.Create(TorchSetup.TinyGpt2(vocab: 50, ctx: 40), seed: 2);
        var o = new SamplingOptions { MaxNewTokens = 30, Temperature = 1.5, Seed = 1 };
        Assert.Equal(Sampler.Generate(model, [0], o, CPU), Sampler.Generate(model, [0], o, CPU));
        Assert.NotEqual(Sampler.Generate(model, [0], o, CPU), Sampler.Generate(model, [0], o with { Seed = 2 }, CPU));
    }

    /// <summary>
    /// Greedy batch picks from float32 CPU logits (scanned in C#) equal the libtorch path's (isfinite + argmax, taken
    /// when the logits are not unit-stride): ties go to the first maximum, a row with inf or NaN goes to the per-row
    /// path in both (the same token or the same failure). Exact: both are comparisons.
    /// </summary>
    [Fact]
    public void Greedy_batch_picks_from_host_logits_equal_torch_argmax()
    {
        var logits = randn([6, 1003], generator: new Generator(7));
        logits[1, 17] = tensor(9f); logits[1, 900] = tensor(9f);                                    // a tie: the first wins
        logits[2, 5] = tensor(float.NegativeInfinity);                                             // masked token: not finite
        logits[3, 40] = tensor(float.NaN);
        logits[4] = tensor(-0f).expand(1003).clone(); logits[4, 3] = tensor(0f);                   // -0 and 0 are equal
        var strided = logits.t().contiguous().t();                                                  // stride(1) = 6: the torch path
        Assert.NotEqual(1, strided.stride(1));
        var o = Enumerable.Range(0, 6).Select(_ => new SamplingOptions { Temperature = 0 }).ToArray();
        var gens = Enumerable.Range(0, 6).Select(i => new Generator((ulong)i)).ToArray();
        var done = Enumerable.Range(0, 6).Select(_ => (IReadOnlyList<int>)[]).ToArray();
        var fast = BatchSampler.Pick(logits, o, gens, done);
        var reference = BatchSampler.Pick(strided, o, gens, done);
        for (int i = 0; i < 6; i++)
        {
            Assert.Equal(reference[i].Token, fast[i].Token);
            Assert.Equal(reference[i].Error?.GetType(), fast[i].Error?.GetType());
        }
        Assert.Equal(17, fast[1].Token);
        Assert.Equal(logits[0].argmax().item<long>(), fast[0].Token);
    }

    [Fact]
    public void Bad_sampling_options_name_the_flag()
    {
        Assert.Contains("--top-p", Assert.Throws<BadInputException>(() => new SamplingOptions { TopP = 0 }.Validate()).Message);
        Assert.Contains("--temperature", Assert.Throws<BadInputException>(() => new SamplingOptions { Temperature = -1 }.Validate()).Message);
        using var model = CausalLM.Create(TorchSetup.TinyGpt2(ctx: 8), seed: 2);
        Assert.Contains("context", Assert.Throws<BadInputException>(() => Sampler.Generate(model, Enumerable.Range(0, 9).ToArray(), new SamplingOptions(), CPU)).Message);
    }
}
