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

    [Fact]
    public void Bad_sampling_options_name_the_flag()
    {
        Assert.Contains("--top-p", Assert.Throws<BadInputException>(() => new SamplingOptions { TopP = 0 }.Validate()).Message);
        Assert.Contains("--temperature", Assert.Throws<BadInputException>(() => new SamplingOptions { Temperature = -1 }.Validate()).Message);
        using var model = CausalLM.Create(TorchSetup.TinyGpt2(ctx: 8), seed: 2);
        Assert.Contains("context", Assert.Throws<BadInputException>(() => Sampler.Generate(model, Enumerable.Range(0, 9).ToArray(), new SamplingOptions(), CPU)).Message);
    }
}
