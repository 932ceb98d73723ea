using Supercluster.Checkpointing;
using Supercluster.Model;
using Supercluster.Training;
using Supercluster.Tests.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Supercluster.Tests.Model;

/// <summary>Vocabulary padding is layout only: the same logits, gradients, checkpoints and training as without it.</summary>
public class VocabPaddingTests : IClassFixture<TrainingFixture>
{
    readonly TrainingFixture _data;

    public VocabPaddingTests(TrainingFixture data)
    {
        TorchSetup.Init();
        _data = data;
    }

    static ModelConfig Config(ModelFamily family, int pad) =>
        (family == ModelFamily.Gpt2 ? TorchSetup.TinyGpt2(vocab: 11) : TorchSetup.TinyLlama(vocab: 11)) with { PadVocabMultiple = pad };

    [Theory]
    [InlineData(ModelFamily.Gpt2)]
    [InlineData(ModelFamily.Llama)]
    public void Padded_tables_give_the_same_logits_and_gradients_and_their_padding_stays_zero(ModelFamily family)
    {
        using var plain = CausalLM.Create(Config(family, 1), seed: 3);
        using var padded = CausalLM.Create(Config(family, 8), seed: 3);
        Assert.Equal(16, padded.Config.PaddedVocab);
        Assert.Equal(plain.Config.ParameterCount(), padded.Config.ParameterCount());   // padding is not a parameter
        foreach (var name in padded.VocabTables)
            Assert.Equal(16, padded.named_parameters().Single(p => p.name == name).parameter.shape[0]);

        var idx = randint(0, 11, [2, 9], generator: new Generator(5));
        var a = plain.forward(idx);
        var b = padded.forward(idx);
        Assert.Equal(new long[] { 2, 9, 11 }, b.shape);
        Assert.True(a.allclose(b, rtol: 1e-5, atol: 1e-6), $"logits differ by {(a - b).abs().max().item<float>()}");

        nn.functional.cross_entropy(a.reshape(-1, 11), idx.reshape(-1)).backward();
        nn.functional.cross_entropy(b.reshape(-1, 11), idx.reshape(-1)).backward();
        var pg = plain.named_parameters().ToDictionary(p => p.name, p => p.parameter.grad!);
        foreach (var (name, p) in padded.named_parameters())
        {
            var g = p.grad!;
            if (padded.VocabTables.Contains(name))
            {
                Assert.Equal(0f, g.narrow(0, 11, 5).abs().max().item<float>());             // padding rows get no gradient
                Assert.Equal(0f, p.detach().narrow(0, 11, 5).abs().max().item<float>());    // and start at zero
                g = g.narrow(0, 0, 11);
            }
            Assert.True(pg[name].allclose(g, rtol: 1e-4, atol: 1e-6), $"gradient of {name} differs");
        }
    }

    [Fact]
    public void Checkpoints_hold_the_real_vocabulary_and_load_into_padded_or_plain_models()
    {
        using var dir = new TempDir();
        using var padded = CausalLM.Create(Config(ModelFamily.Gpt2, 8), seed: 4);
        ModelCheckpoint.WriteModel(dir.Path, padded, "byte");
        var (tensors, _) = SafeTensors.Read(Path.Combine(dir.Path, ModelCheckpoint.ModelFile));
        Assert.Equal(new long[] { 11, 8 }, tensors["wte.weight"].shape);

        var idx = randint(0, 11, [1, 7], generator: new Generator(6));
        var expected = padded.forward(idx);
        using var plain = CausalLM.Create(Config(ModelFamily.Gpt2, 1), seed: 9);
        ModelCheckpoint.LoadWeights(plain, Path.Combine(dir.Path, ModelCheckpoint.ModelFile));
        Assert.True(expected.allclose(plain.forward(idx), rtol: 1e-5, atol: 1e-6));

        using var padded2 = CausalLM.Create(Config(ModelFamily.Gpt2, 64), seed: 9);
        using (no_grad()) padded2.named_parameters().Single(p => p.name == "wte.weight").parameter.fill_(5);   // stale rows must be cleared
        ModelCheckpoint.LoadWeights(padded2, Path.Combine(dir.Path, ModelCheckpoint.ModelFile));
        Assert.True(expected.allclose(padded2.forward(idx), rtol: 1e-5, atol: 1e-6));
        Assert.Equal(0f, padded2.named_parameters().Single(p => p.name == "wte.weight").parameter.detach().narrow(0, 11, 53).abs().max().item<float>());
    }

    [Fact]
    public void Training_with_a_padded_vocabulary_follows_the_same_loss_curve()
    {
        using var dir = new TempDir();
        TrainOptions Options(string outDir, int pad) => new()
        {
            DataDir = _data.DataDir, OutDir = outDir, Model = "tiny", BatchSize = 4, SeqLen = 32, Steps = 6, Lr = 3e-3, Warmup = 1,
            Device = "cpu", Seed = 8, PadVocab = pad,
        };
        var plain = new Trainer(Options(dir["plain"], 1), TextWriter.Null).Run();
        var padded = new Trainer(Options(dir["padded"], 128), TextWriter.Null).Run();
        var a = Losses(plain.RunDir);
        var b = Losses(padded.RunDir);
        Assert.Equal(6, b.Count);
        Assert.True(a[^1] < a[0] - 0.05, $"training did not learn: {string.Join(", ", a)}");
        Assert.All(a.Zip(b), p => Assert.Equal(p.First, p.Second, 4));
        Assert.Contains("\"pad_vocab_multiple\": 128", File.ReadAllText(Path.Combine(padded.LastCheckpoint!, ModelCheckpoint.ConfigFile)));
    }

    static List<double> Losses(string runDir) =>
        MetricsLog.Read(Path.Combine(runDir, "metrics.jsonl")).Where(r => (string?)r["type"] == "train").Select(r => (double)r["loss"]!).ToList();
}
