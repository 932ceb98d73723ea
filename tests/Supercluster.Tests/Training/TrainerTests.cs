using System.Text.Json.Nodes;
using Supercluster.Checkpointing;
using Supercluster.Data;
using Supercluster.Training;
using TorchSharp;

namespace Supercluster.Tests.Training;

public class TrainerTests : IClassFixture<TrainingFixture>
{
    readonly TrainingFixture _data;

    public TrainerTests(TrainingFixture data)
    {
        TorchSetup.Init();
        _data = data;
    }

    TrainOptions Options(string outDir) => new()
    {
        DataDir = _data.DataDir, OutDir = outDir, Model = "tiny", BatchSize = 4, SeqLen = 32, Steps = 8, Lr = 3e-3, Warmup = 2,
        Device = "cpu", CheckpointEvery = 4, EvalEvery = 4, EvalTokens = 256, Seed = 5,
    };

    static List<double> Losses(string runDir) =>
        MetricsLog.Read(Path.Combine(runDir, "metrics.jsonl")).Where(r => (string?)r["type"] == "train").Select(r => (double)r["loss"]!).ToList();

    static Dictionary<string, torch.Tensor> Weights(string runDir) =>
        SafeTensors.Read(Path.Combine(new CheckpointStore(runDir).Latest()!, ModelCheckpoint.ModelFile)).Tensors;

    [Fact]
    public void Resume_is_exact_n_steps_equal_half_then_resume_then_half_bitwise()
    {
        using var dir = new TempDir();
        var straight = new Trainer(Options(dir["straight"]), TextWriter.Null).Run();

        // Stop after step 4 for real: the CLI kills itself (SIGKILL) right after that step's checkpoint.
        var o = Options(dir["resumed"]);
        string[] args = ["train", "--data", o.DataDir, "--out", o.OutDir, "--model", "tiny", "--batch-size", "4", "--seq-len", "32", "--steps", "8",
            "--lr", "3e-3", "--warmup", "2", "--device", "cpu", "--checkpoint-every", "4", "--eval-every", "4", "--eval-tokens", "256", "--seed", "5"];
        var killed = CliProcess.Run([.. args, "--fault", "kill:rank=0:step=4"]);
        Assert.NotEqual(0, killed.ExitCode);
        Assert.Equal(4, Losses(o.OutDir).Count);
        var resumed = CliProcess.Run([.. args, "--resume", "auto"]);
        Assert.True(resumed.ExitCode == 0, resumed.Err);
        Assert.Contains("resumed from", resumed.Out);

        Assert.Equal(8, Losses(straight.RunDir).Count);
        Assert.Equal(Losses(straight.RunDir), Losses(o.OutDir)); // exact double equality, step by step
        var a = Weights(straight.RunDir);
        var b = Weights(o.OutDir);
        Assert.Equal(a.Keys.Order(), b.Keys.Order());
        foreach (var k in a.Keys) Assert.True(a[k].eq(b[k]).all().item<bool>(), $"weights differ: {k}");
    }

    [Fact]
    public void A_crash_inside_a_checkpoint_write_leaves_the_previous_checkpoint_chosen_on_resume()
    {
        using var dir = new TempDir();
        string run = dir["run"];
        string[] args = ["train", "--data", _data.DataDir, "--out", run, "--model", "tiny", "--batch-size", "4", "--seq-len", "32", "--steps", "8",
            "--device", "cpu", "--checkpoint-every", "2", "--seed", "5"];
        var crashed = CliProcess.Run([.. args, "--fault", "crash-in-checkpoint:step=4"]);
        Assert.NotEqual(0, crashed.ExitCode);
        var store = new CheckpointStore(run);
        Assert.EndsWith("step_0000002", store.Latest());
        Assert.Contains(Directory.GetDirectories(store.Root), d => Path.GetFileName(d).StartsWith(".tmp-step_0000004")); // the torn write is there, ignored

        var resumed = CliProcess.Run([.. args, "--resume", "auto"]);
        Assert.True(resumed.ExitCode == 0, resumed.Err);
        Assert.Contains("step_0000002 at step 2", resumed.Out);
        Assert.Equal(Enumerable.Range(1, 8).Select(i => (long)i), MetricsLog.Read(Path.Combine(run, "metrics.jsonl")).Where(r => (string?)r["type"] == "train").Select(r => (long)r["step"]!));
        Assert.EndsWith("step_0000008", store.Latest());
        Assert.DoesNotContain(Directory.GetDirectories(store.Root), d => Path.GetFileName(d).StartsWith(".tmp-"));
    }

    [Fact]
    public void Metrics_and_config_describe_the_run()
    {
        using var dir = new TempDir();
        var r = new Trainer(Options(dir["run"]) with { SampleEvery = 8, SampleTokens = 8 }, TextWriter.Null).Run();
        var records = MetricsLog.Read(Path.Combine(r.RunDir, "metrics.jsonl"));
        Assert.Equal(8, records.Count(x => (string?)x["type"] == "train"));
        Assert.Equal([4L, 8L], records.Where(x => (string?)x["type"] == "eval").Select(x => (long)x["step"]!));
        Assert.Single(records, x => (string?)x["type"] == "sample");
        var train = records.First(x => (string?)x["type"] == "train");
        foreach (var key in new[] { "loss", "lr", "grad_norm", "tokens", "tokens_per_s", "time_s" }) Assert.NotNull(train[key]);
        // The step by phase (what plan --device cpu --calibrate's phases are compared with): the phases add up to the step
        // (the clock starts with it; step_ms also holds the step's last bookkeeping), and "between" holds the eval and
        // checkpoint after step 4, so it is longer before step 5 than before step 3; none before the first step.
        var steps = records.Where(x => (string?)x["type"] == "train").ToList();
        foreach (var s in steps)
        {
            var phases = s["rank_phase_ms"]!.AsObject();
            Assert.Equal(["data", "forward", "backward", "optimizer", "between", "jit"], phases.Select(kv => kv.Key));
            double sum = new[] { "data", "forward", "backward", "optimizer" }.Sum(k => (double)phases[k]![0]!), step = (double)s["step_ms"]!;
            Assert.True(sum <= step + 0.05 && sum >= 0.8 * step, $"phases {sum} ms vs step {step} ms");
            Assert.True((double)phases["forward"]![0]! > 0 && (double)phases["backward"]![0]! > 0);
        }
        Assert.Null(steps[0]["rank_phase_ms"]!["between"]![0]);
        // JIT time is the process's: in a suite other tests have already compiled the step's code, so only its sign holds.
        Assert.All(steps, s => Assert.True((double)s["rank_phase_ms"]!["jit"]![0]! >= 0));
        Assert.True((double)steps[4]["rank_phase_ms"]!["between"]![0]! > (double)steps[2]["rank_phase_ms"]!["between"]![0]!);
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(r.RunDir, "config.json")))!;
        Assert.Equal("tiny", (string?)config["options"]!["model"]);
        Assert.Equal(257, (int)config["model"]!["vocab_size"]!);
        Assert.Equal(2, new CheckpointStore(r.RunDir).Complete().Count());
    }

    [Fact]
    public void Gradient_accumulation_over_micro_batches_equals_one_big_batch()
    {
        using var dir = new TempDir();
        var big = new Trainer(Options(dir["big"]) with { BatchSize = 8, Steps = 3, CheckpointEvery = 0, EvalEvery = 0 }, TextWriter.Null).Run();
        var acc = new Trainer(Options(dir["acc"]) with { BatchSize = 4, TotalBatchTokens = 8 * 32, Steps = 3, CheckpointEvery = 0, EvalEvery = 0 }, TextWriter.Null).Run();
        var lb = Losses(big.RunDir);
        var la = Losses(acc.RunDir);
        for (int i = 0; i < 3; i++) Assert.Equal(lb[i], la[i], 1e-5);
    }

    [Fact]
    public void A_tiny_model_learns_the_sotu_corpus_below_its_unigram_entropy()
    {
        using var dir = new TempDir();
        string data = dir["sotu"];
        Preparer.Run(SampleCorpora.Sotu(), new PrepareOptions { OutDir = data, Tokenizer = "byte", ValFraction = 0.05 });
        // Unigram entropy of the training bytes (nats): what a model without context can reach at best.
        var counts = new long[257];
        var meta = DatasetMeta.Load(data);
        foreach (var shard in meta.TrainShards)
        {
            using var reader = ShardReader.Open(Path.Combine(data, shard.File));
            var buf = new int[reader.TokenCount];
            reader.Read(0, buf);
            foreach (var t in buf) counts[t]++;
        }
        double total = counts.Sum();
        double unigram = -counts.Where(c => c > 0).Sum(c => c / total * Math.Log(c / total));

        var r = new Trainer(new TrainOptions
        {
            DataDir = data, OutDir = dir["run"], Model = "tiny", BatchSize = 16, Steps = 150, Lr = 3e-3, Warmup = 10,
            Device = "cpu", EvalTokens = 16384, Seed = 1,
        }, TextWriter.Null).Run();
        Assert.NotNull(r.FinalValLoss);
        Assert.True(r.FinalValLoss < unigram - 0.4, $"val loss {r.FinalValLoss:F3} vs unigram entropy {unigram:F3}");
    }
}
