using Supercluster.Checkpointing;
using Supercluster.Model;
using Supercluster.Parallelism;
using Supercluster.Tests.Distributed;
using Supercluster.Tests.Training;
using Supercluster.Training;

namespace Supercluster.Tests.Parallelism;

/// <summary>
/// <c>train --cp</c> end to end under a real mpirun: 20-step loss records and the final validation loss equal one rank
/// with the same global batch and seed, alone and composed with TP, and a CP checkpoint resumes on one rank.
/// Tolerance 1e-5 relative: fp32 sums over another grouping of the same terms (see <see cref="ContextParallelTests"/>).
/// </summary>
public class ContextParallelTrainingTests : IClassFixture<TrainingFixture>
{
    readonly TrainingFixture _data;
    const int Steps = 20;

    public ContextParallelTrainingTests(TrainingFixture data)
    {
        TorchSetup.Init();
        _data = data;
    }

    string[] TrainArgs(string run, string model, params string[] extra)
    {
        var o = new Dictionary<string, string>
        {
            ["--data"] = _data.DataDir, ["--out"] = run, ["--model"] = model, ["--batch-size"] = "4", ["--seq-len"] = "16",
            ["--steps"] = Steps.ToString(), ["--lr"] = "3e-3", ["--warmup"] = "1", ["--checkpoint-every"] = "10", ["--device"] = "cpu", ["--seed"] = "3",
            ["--eval-tokens"] = "256",
        };
        for (int i = 0; i < extra.Length; i += 2) o[extra[i]] = extra[i + 1];
        return ["train", .. o.SelectMany(kv => new[] { kv.Key, kv.Value })];
    }

    static CliProcess.Result Run(int ranks, string[] args) => ranks == 1 ? CliProcess.Run(args) : DistributedTests.Mpirun(ranks, args);

    static Dictionary<long, double> Records(string run, string type, string field) =>
        MetricsLog.Read(Path.Combine(run, "metrics.jsonl")).Where(r => (string?)r["type"] == type).ToDictionary(r => (long)r["step"]!, r => (double)r[field]!);

    static void AssertClose(Dictionary<long, double> expected, Dictionary<long, double> actual, string what)
    {
        Assert.NotEmpty(actual);
        foreach (var (step, v) in actual)
            Assert.True(Math.Abs(expected[step] - v) <= 1e-5 * Math.Abs(expected[step]), $"{what}, step {step}: {expected[step]} vs {v}");
    }

    [Theory]
    [InlineData("llama-tiny", 2, new string[] { "--cp", "2" })]              // rotary positions follow the chunks
    [InlineData("tiny", 4, new string[] { "--tp", "2", "--cp", "2" })]       // gpt2, learned positions, TP2 × CP2
    public void Losses_and_validation_equal_one_rank_for_20_steps(string model, int ranks, string[] layout)
    {
        using var dir = new TempDir();
        var one = Run(1, TrainArgs(dir["one"], model));
        Assert.True(one.ExitCode == 0, one.Err);
        var cp = Run(ranks, TrainArgs(dir["cp"], model, layout));
        Assert.True(cp.ExitCode == 0, cp.Out + cp.Err);
        Assert.Contains("cp groups: ", cp.Out);
        AssertClose(Records(dir["one"], "train", "loss"), Records(dir["cp"], "train", "loss"), $"{model} {string.Join(' ', layout)}");
        AssertClose(Records(dir["one"], "eval", "val_loss"), Records(dir["cp"], "eval", "val_loss"), $"{model} {string.Join(' ', layout)} validation");
        if (ranks != 2) return;
        // The CP checkpoint is layout-free: it resumes on one rank with the same losses.
        string ckpt = Path.Combine(dir["cp"], "checkpoints", CheckpointStore.DirName(10));
        var resumed = Run(1, TrainArgs(dir["resumed"], model, "--resume", ckpt));
        Assert.True(resumed.ExitCode == 0, resumed.Out + resumed.Err);
        AssertClose(Records(dir["one"], "train", "loss"), Records(dir["resumed"], "train", "loss"), "resumed from CP2 on one rank");
    }

    [Fact]
    public void A_sequence_that_does_not_split_into_two_chunks_per_rank_is_refused_naming_the_flag()
    {
        var config = ModelPresets.Get("llama-tiny") with { VocabSize = 257 };
        var e = Assert.Throws<BadInputException>(() => Parallelize.Validate(config, new ParallelDims(Cp: 4), false, 12));
        Assert.StartsWith("--cp 4: --seq-len 12 is not divisible by 2 × cp = 8", e.Message);
        Parallelize.Validate(config, new ParallelDims(Cp: 4), false, 16);
    }
}
