using Supercluster.Cli.Commands;
using Supercluster.Data;
using Supercluster.FineTuning;
using Supercluster.Tests.Training;
using Supercluster.Training;

namespace Supercluster.Tests.FineTuning;

/// <summary>Fine-tuning's bad inputs: one line naming the flag, file or value; exit 2 from the CLI.</summary>
[Collection("Console")]
public class FineTuneBadInputTests : IClassFixture<TrainingFixture>
{
    readonly TrainingFixture _data;

    public FineTuneBadInputTests(TrainingFixture data)
    {
        TorchSetup.Init();
        _data = data;
    }

    [Fact]
    public void LoRA_flags_are_checked_before_anything_runs()
    {
        var o = new TrainOptions { DataDir = _data.DataDir, OutDir = "unused" };
        Assert.Contains("--lora-rank needs --init-from", Assert.Throws<BadInputException>(() => (o with { LoraRank = 4 }).Validate()).Message);
        Assert.Contains("unknown projection 'qq'", Assert.Throws<BadInputException>(() => (o with { LoraRank = 4, InitFrom = "x", LoraTargets = "q,qq" }).Validate()).Message);
        Assert.Contains("--lora-dropout 1", Assert.Throws<BadInputException>(() => (o with { LoraRank = 4, InitFrom = "x", LoraDropout = 1 }).Validate()).Message);
        Assert.Contains("gpt2 family has no gate projection", Assert.Throws<BadInputException>(() => LoraOptions.ModuleOf(Supercluster.Model.ModelFamily.Gpt2, "gate")).Message);
    }

    [Fact]
    public void Train_refuses_a_sequence_length_other_than_the_packing_and_the_cli_names_bad_adapters_and_init_checkpoints()
    {
        using var dir = new TempDir();
        File.WriteAllLines(dir["c.jsonl"], ChatDataTests.Records);
        ChatPreparer.Run([dir["c.jsonl"]], new ChatPrepareOptions { OutDir = dir["chat"], Tokenizer = "byte", SeqLen = 64, ValFraction = 0 });
        var e = Assert.Throws<BadInputException>(() => new Trainer(new TrainOptions { DataDir = dir["chat"], OutDir = dir["run"], Model = "tiny", SeqLen = 32, Device = "cpu" }, TextWriter.Null).Run());
        Assert.Contains("packs conversations into sequences of 64 tokens", e.Message);

        var (code, _, err) = InProcessCli.Run([TrainCommand.Create()], "train", "--data", dir["chat"], "--out", dir["run2"], "--init-from", dir["nothing"], "--device", "cpu");
        Assert.Equal(2, code);
        Assert.Contains("--init-from", err);
        (code, _, err) = InProcessCli.Run([MergeCommand.Create()], "merge", "--adapter", dir["chat"], "--out", dir["m"]);
        Assert.Equal(2, code);
        Assert.Contains("not a checkpoint directory", err);
        Assert.False(Directory.Exists(dir["m"]));
    }
}
