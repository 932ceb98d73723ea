using Supercluster.Checkpointing;
using Supercluster.Model;
using Supercluster.Training;

namespace Supercluster.Tests.Training;

public class BenchmarkTests : IClassFixture<TrainingFixture>
{
    readonly TrainingFixture _data;

    public BenchmarkTests(TrainingFixture data)
    {
        TorchSetup.Init();
        _data = data;
    }

    [Fact]
    public void Bench_times_every_phase_learns_and_saves_the_initial_weights_for_the_reference()
    {
        using var dir = new TempDir();
        var r = Benchmark.Run(new BenchOptions
        {
            Model = "tiny", BatchSize = 4, SeqLen = 32, Dtype = "fp32", Device = "cpu", Steps = 8, WarmupSteps = 1, Lr = 3e-3,
            DataDir = _data.DataDir, PadVocab = 64, SaveInit = dir["init/model.safetensors"], PeakTflops = 1,
        }, TextWriter.Null);
        Assert.True(r.TokensPerSecond > 0 && r.MsPerStep > 0);
        Assert.True(r.ForwardMs > 0 && r.BackwardMs > 0 && r.OptimizerMs > 0);
        Assert.True(r.ForwardMs + r.BackwardMs + r.OptimizerMs + r.DataMs <= r.MsPerStep * 1.5);
        // MFU counts the useful work: the real vocabulary's head, not the padding.
        Assert.Equal(r.TokensPerSecond * Supercluster.Planning.FlopsModel.ModelFlopsPerToken(ModelPresets.Get("tiny") with { VocabSize = 257 }, 32) / 1e12, r.Mfu!.Value, 6);
        Assert.True(r.LastLoss < r.FirstLoss, $"{r.FirstLoss} → {r.LastLoss}");
        Assert.InRange(r.FirstLoss, Math.Log(257) - 0.3, Math.Log(257) + 0.3); // padding adds no outputs
        Assert.Equal((257, 320), (r.Vocab, r.PaddedVocab));
        Assert.Contains("torch ops", r.Optimizer);

        // The saved weights are the model before any step: config (with its padding) + HF-layout tensors of the real vocabulary.
        var config = ModelCheckpoint.ReadConfig(dir["init"]);
        Assert.Equal((257, 64, 320), (config.VocabSize, config.PadVocabMultiple, config.PaddedVocab));
        using var model = CausalLM.Create(config, seed: 99);
        ModelCheckpoint.LoadWeights(model, dir["init/model.safetensors"]);
        using var fresh = CausalLM.Create(config, seed: 1337);
        foreach (var ((name, a), (_, b)) in model.named_parameters().Zip(fresh.named_parameters()))
            Assert.True(a.eq(b).all().item<bool>(), name);
    }
}
