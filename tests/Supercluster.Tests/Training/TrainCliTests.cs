using System.CommandLine;
using Supercluster.Cli;
using Supercluster.Cli.Commands;

namespace Supercluster.Tests.Training;

/// <summary>The train/sample/eval verbs in-process: bad input is one line on stderr, exit code 2, nothing written.</summary>
[Collection("Console")]
public class TrainCliTests : IClassFixture<TrainingFixture>
{
    readonly TrainingFixture _data;

    public TrainCliTests(TrainingFixture data)
    {
        TorchSetup.Init();
        _data = data;
    }

    static (int Code, string Out, string Err) Run(params string[] args) =>
        InProcessCli.Run([TrainCommand.Create(), SampleCommand.Create(), EvalCommand.Create()], args);

    /// <summary>A valid train command line; <paramref name="extra"/> option/value pairs replace or add options.</summary>
    string[] Train(string outDir, params string[] extra)
    {
        var options = new Dictionary<string, string>
        {
            ["--data"] = _data.DataDir, ["--out"] = outDir, ["--model"] = "tiny", ["--batch-size"] = "2", ["--seq-len"] = "16", ["--steps"] = "2", ["--device"] = "cpu",
        };
        for (int i = 0; i < extra.Length; i += 2) options[extra[i]] = extra[i + 1];
        return ["train", .. options.SelectMany(kv => new[] { kv.Key, kv.Value })];
    }

    [Theory]
    [InlineData("--model", "gpt7", "unknown preset 'gpt7'")]
    [InlineData("--device", "tpu", "unknown device 'tpu'")]
    [InlineData("--device", "cuda", "CUDA is not available")]
    [InlineData("--dtype", "fp8", "unknown dtype 'fp8'")]
    [InlineData("--seq-len", "65", "exceeds the model context 64")]
    [InlineData("--batch-size", "0", "--batch-size = 0")]
    [InlineData("--lr", "-1", "--lr = -1")]
    [InlineData("--n-layer", "-2", "--n-layer = -2")]
    [InlineData("--total-batch-tokens", "100", "not a multiple of")]
    [InlineData("--fault", "explode:step=1", "unknown kind 'explode'")]
    [InlineData("--steps", "many", "many")]
    [InlineData("--pad-vocab", "0", "--pad-vocab = 0")]
    [InlineData("--optimizer", "apex", "unknown AdamW implementation 'apex'")]
    [InlineData("--optimizer", "fused", "needs the parameters on a CUDA device")]
    public void Bad_train_options_give_one_line_and_exit_2(string option, string value, string message)
    {
        using var dir = new TempDir();
        var (code, _, err) = Run(Train(dir["run"], option, value));
        Assert.Equal(2, code);
        var line = Assert.Single(err.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.StartsWith("error: ", line);
        Assert.Contains(message, line);
        Assert.False(Directory.Exists(Path.Combine(dir["run"], "checkpoints")));
    }

    [Fact]
    public void Missing_data_and_mismatched_checkpoints_are_named()
    {
        using var dir = new TempDir();
        var (code, _, err) = Run("train", "--data", dir["nowhere"], "--out", dir["run"], "--model", "tiny");
        Assert.Equal(2, code);
        Assert.Contains(dir["nowhere"], err);

        Assert.Equal(0, Run(Train(dir["run"])).Code);
        (code, _, err) = Run(Train(dir["run"]));
        Assert.Equal(2, code);
        Assert.Contains("already has checkpoints", err);

        (code, _, err) = Run(Train(dir["run"], "--resume", "auto", "--steps", "4", "--n-embd", "32"));
        Assert.Equal(2, code);
        Assert.Contains("does not match the requested model", err);
        Assert.Contains("config.json", err);

        (code, _, err) = Run("sample", "--checkpoint", dir["nowhere"], "--device", "cpu");
        Assert.Equal(2, code);
        Assert.Contains("not a checkpoint directory", err);
    }

    [Fact]
    public void Sample_and_eval_run_on_a_trained_checkpoint()
    {
        using var dir = new TempDir();
        Assert.Equal(0, Run(Train(dir["run"])).Code);
        var (code, output, err) = Run("sample", "--checkpoint", dir["run"], "--prompt", "The union", "--max-new-tokens", "12", "--num-samples", "2", "--device", "cpu");
        Assert.True(code == 0, err);
        Assert.Equal(2, output.Split("The union").Length - 1);
        (code, output, err) = Run("eval", "--checkpoint", dir["run"], "--data", _data.DataDir, "--device", "cpu", "--batch-size", "2", "--eval-tokens", "256");
        Assert.True(code == 0, err);
        Assert.Matches(@"val loss \d+\.\d{4}, perplexity \d+\.\d{2}", output);
    }
}
