using Supercluster.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace Supercluster.Tests.Model;

public class ModelTests
{
    public ModelTests() => TorchSetup.Init();

    [Fact]
    public void Gpt2_124M_has_the_published_parameter_count()
    {
        var config = ModelPresets.Get("gpt2");
        Assert.Equal(124_439_808, config.ParameterCount());
        using var model = CausalLM.Create(config, seed: 0);
        Assert.Equal(124_439_808, model.parameters().Sum(p => p.numel()));
    }

    [Theory]
    [InlineData("tiny")]
    [InlineData("llama-tiny")]
    [InlineData("llama-small")]
    public void Counted_parameters_match_the_built_model(string preset)
    {
        var config = ModelPresets.Get(preset) with { VocabSize = 257 };
        using var model = CausalLM.Create(config, seed: 0);
        Assert.Equal(config.ParameterCount(), model.parameters().Sum(p => p.numel()));
    }

    [Theory]
    [InlineData(ModelFamily.Gpt2)]
    [InlineData(ModelFamily.Llama)]
    public void Changing_token_t_leaves_earlier_logits_unchanged(ModelFamily family)
    {
        var config = family == ModelFamily.Gpt2 ? TorchSetup.TinyGpt2() : TorchSetup.TinyLlama();
        using var model = CausalLM.Create(config, seed: 1);
        model.eval();
        using var _ = no_grad();
        var idx = randint(0, config.VocabSize, [2, 12], generator: new Generator(7));
        var before = model.forward(idx);
        var changed = idx.clone();
        changed[.., 6] = (changed[.., 6] + 1) % config.VocabSize;
        var after = model.forward(changed);
        Assert.True(before[.., ..6].allclose(after[.., ..6], rtol: 0, atol: 1e-6), "logits before t changed");
        Assert.False(before[.., 6..].allclose(after[.., 6..], rtol: 0, atol: 1e-6), "logits from t on should change");
    }

    [Theory]
    [InlineData("tiny")]
    [InlineData("llama-tiny")]
    public void Loss_at_initialisation_is_close_to_log_vocab(string preset)
    {
        var config = ModelPresets.Get(preset) with { VocabSize = 50257 };
        using var model = CausalLM.Create(config, seed: 3);
        using var _ = no_grad();
        var idx = randint(0, config.VocabSize, [4, config.SeqLen + 1], generator: new Generator(5));
        var logits = model.forward(idx[.., ..^1]);
        double loss = nn.functional.cross_entropy(logits.view(-1, config.VocabSize), idx[.., 1..].reshape(-1)).item<float>();
        Assert.InRange(loss, Math.Log(50257) - 0.1, Math.Log(50257) + 0.1);
    }

    [Theory]
    [InlineData(ModelFamily.Gpt2)]
    [InlineData(ModelFamily.Llama)]
    public void Gradients_of_a_float64_model_match_finite_differences(ModelFamily family)
    {
        var config = family == ModelFamily.Gpt2 ? TorchSetup.TinyGpt2() : TorchSetup.TinyLlama();
        using var model = CausalLM.Create(config, seed: 2);
        model.to(ScalarType.Float64);
        var idx = randint(0, config.VocabSize, [2, 9], generator: new Generator(11));
        var x = idx[.., ..^1];
        var y = idx[.., 1..].reshape(-1);
        Tensor Loss() => nn.functional.cross_entropy(model.forward(x).view(-1, config.VocabSize), y);

        Loss().backward();
        var rng = new Random(1);
        int checkedEntries = 0;
        foreach (var (name, p) in model.named_parameters())
        {
            var flat = p.detach().view(-1);
            var grad = p.grad!.view(-1);
            for (int k = 0; k < 2; k++)
            {
                long i = rng.NextInt64(flat.numel());
                double analytic = grad[i].item<double>();
                double orig = flat[i].item<double>();
                const double eps = 1e-6;
                double plus, minus;
                using (no_grad())
                {
                    flat[i] = orig + eps; plus = Loss().item<double>();
                    flat[i] = orig - eps; minus = Loss().item<double>();
                    flat[i] = orig;
                }
                double numeric = (plus - minus) / (2 * eps);
                Assert.True(Math.Abs(numeric - analytic) <= 1e-6 + 1e-4 * Math.Abs(numeric),
                    $"{name}[{i}]: analytic {analytic:G8}, numeric {numeric:G8}");
                checkedEntries++;
            }
        }
        Assert.True(checkedEntries > 10);
    }

    [Theory]
    [InlineData("tiny")]
    [InlineData("llama-tiny")]
    public void A_tiny_model_overfits_one_batch(string preset)
    {
        var config = ModelPresets.Get(preset) with { VocabSize = 257, SeqLen = 32 };
        using var model = CausalLM.Create(config, seed: 4);
        using var trainStep = new Supercluster.Training.TrainStep(model, new Supercluster.Distributed.SingleProcess(),
            new Supercluster.Training.TrainStepOptions { BatchSize = 4, SeqLen = 32, WeightDecay = 0, GradClip = 0 });
        var idx = randint(0, 257, [4, 33], generator: new Generator(9));
        var inputs = idx[.., ..^1].reshape(-1).data<long>().ToArray();
        var targets = idx[.., 1..].reshape(-1).data<long>().ToArray();
        float loss = float.NaN;
        for (int step = 0; step < 300 && !(loss < 0.05f); step++)
            loss = (float)trainStep.Run((x, y) => { inputs.CopyTo(x, 0); targets.CopyTo(y, 0); }, accumulation: 1, lr: 3e-3).Loss;
        Assert.True(loss < 0.1f, $"loss after overfitting one batch: {loss}");
    }

    [Fact]
    public void Bf16_compute_keeps_fp32_parameters_and_tracks_fp32_loss()
    {
        var config = TorchSetup.TinyGpt2(vocab: 257, ctx: 16) with { NEmbd = 32, FfnHidden = 128 };
        using var model = CausalLM.Create(config, seed: 6);
        var idx = randint(0, 257, [2, 17], generator: new Generator(2));
        Tensor Loss() => nn.functional.cross_entropy(model.forward(idx[.., ..^1]).view(-1, 257).to(ScalarType.Float32), idx[.., 1..].reshape(-1));
        double fp32 = Loss().item<float>();
        // bf16 compute weights in the model; the fp32 master weights and gradients in the training step's flat buffers.
        using var step = new Supercluster.Training.TrainStep(model, new Supercluster.Distributed.SingleProcess(),
            new Supercluster.Training.TrainStepOptions { BatchSize = 2, SeqLen = 16, ComputeDtype = ScalarType.BFloat16 });
        step.Flat.ZeroGradients();
        var l = Loss();
        l.backward();
        step.Flat.AccumulateComputeGradients(first: true);
        Assert.InRange(l.item<float>(), fp32 - 0.05, fp32 + 0.05);
        Assert.All(step.Flat.Items, p => Assert.Equal(ScalarType.Float32, p.Value.dtype));
        Assert.Equal(ScalarType.Float32, step.Flat.Gradients.dtype);
    }

    [Fact]
    public void Invalid_configs_name_the_field()
    {
        var e = Assert.Throws<BadInputException>(() => (TorchSetup.TinyGpt2() with { NEmbd = 9 }).Validate());
        Assert.Contains("n_embd = 9", e.Message);
        e = Assert.Throws<BadInputException>(() => (TorchSetup.TinyGpt2() with { NLayer = 0 }).Validate());
        Assert.Contains("n_layer", e.Message);
        e = Assert.Throws<BadInputException>(() => ModelPresets.Get("gpt5"));
        Assert.Contains("gpt5", e.Message);
        e = Assert.Throws<BadInputException>(() => ModelConfig.FromJson("{\"n_layer\": 2, \"colour\": 1}", "x/config.json"));
        Assert.Contains("x/config.json", e.Message);
    }
}
