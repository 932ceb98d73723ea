using System.CommandLine;
using System.Globalization;
using System.Text.RegularExpressions;
using Supercluster.Cli.Commands;
using Supercluster.Data;
using Supercluster.Tests.Training;
using Supercluster.Training;

namespace Supercluster.Tests.FirstRun;

/// <summary>
/// A run's last validation and <c>eval</c> of its checkpoint use the same default token count, print it, and evaluate
/// the same rows whatever the batch size, so their losses agree.
/// </summary>
[Collection("Console")]
public class EvalTokenTests : IClassFixture<TrainingFixture>
{
    readonly TrainingFixture _data;

    public EvalTokenTests(TrainingFixture data)
    {
        TorchSetup.Init();
        _data = data;
    }

    static (int Code, string Out, string Err) Run(params string[] args) =>
        InProcessCli.Run([TrainCommand.Create(), EvalCommand.Create()], args);

    static (double Loss, long Tokens) Parse(string output, string pattern)
    {
        var m = Regex.Matches(output, pattern + @"val loss (\d+\.\d{4})[^\n]* over ([\d,]+) tokens").LastOrDefault();
        Assert.True(m is not null, $"no '{pattern}val loss ... over N tokens' line in:\n{output}");
        return (double.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture), long.Parse(m.Groups[2].Value, NumberStyles.AllowThousands, CultureInfo.InvariantCulture));
    }

    [Fact]
    public void Train_and_eval_have_one_default_token_count()
    {
        var train = TrainCommand.Create();
        var eval = EvalCommand.Create();
        var root = new RootCommand { Subcommands = { train, eval } };
        long trainDefault = root.Parse("train --data d").GetValue<long>("--eval-tokens");
        long evalDefault = root.Parse("eval --checkpoint c --data d").GetValue<long>("--eval-tokens");
        Assert.Equal(Evaluator.DefaultTokens, trainDefault);
        Assert.Equal(Evaluator.DefaultTokens, evalDefault);
        Assert.Equal(Evaluator.DefaultTokens, new TrainOptions { DataDir = "d", OutDir = "o" }.EvalTokens);
    }

    [Fact]
    public void A_runs_last_validation_and_eval_of_its_checkpoint_agree_on_tokens_and_loss()
    {
        using var dir = new TempDir();
        // Defaults for --eval-tokens on both sides; training batch 2, eval batch 8 (its default).
        var (code, output, err) = Run("train", "--data", _data.DataDir, "--out", dir["run"], "--model", "tiny", "--batch-size", "2", "--steps", "2", "--device", "cpu");
        Assert.True(code == 0, err);
        var trained = Parse(output, @"step 2: ");
        (code, output, err) = Run("eval", "--checkpoint", dir["run"], "--data", _data.DataDir, "--device", "cpu");
        Assert.True(code == 0, err);
        var evaluated = Parse(output, @": ");
        Assert.Equal(trained.Tokens, evaluated.Tokens);
        // The fixture's val split is smaller than the default: all of it, in whole rows of the context (64 tokens).
        var meta = DatasetMeta.Load(_data.DataDir);
        var val = Assert.Single(meta.Shards("val"));
        Assert.Equal((val.Tokens - 1) / 64 * 64, evaluated.Tokens);
        // Same weights, same rows; only the fp32 batching differs (~1e-6), and both are printed to 4 decimals.
        Assert.True(Math.Abs(trained.Loss - evaluated.Loss) <= 2e-4, $"train's last val loss {trained.Loss} vs eval's {evaluated.Loss}");

        // Fewer tokens than the split: ⌈1000 / 64⌉ = 16 rows, the same ones with a partial last batch (3) or one batch (16).
        var losses = new List<double>();
        foreach (var batch in new[] { "3", "16" })
        {
            (code, output, err) = Run("eval", "--checkpoint", dir["run"], "--data", _data.DataDir, "--device", "cpu", "--eval-tokens", "1000", "--batch-size", batch);
            Assert.True(code == 0, err);
            var r = Parse(output, @": ");
            Assert.Equal(1024, r.Tokens);
            losses.Add(r.Loss);
        }
        Assert.True(Math.Abs(losses[0] - losses[1]) <= 2e-4, $"batch 3: {losses[0]}, batch 16: {losses[1]}");
    }
}
