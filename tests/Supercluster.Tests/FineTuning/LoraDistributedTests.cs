using System.Diagnostics;
using Supercluster.Checkpointing;
using Supercluster.Data;
using Supercluster.Distributed;
using Supercluster.FineTuning;
using Supercluster.Tests.Training;
using Supercluster.Training;

namespace Supercluster.Tests.FineTuning;

/// <summary>LoRA on loss-masked chat data under a real mpirun: 2 ranks with ZeRO-1 compute what 1 rank computes.</summary>
public class LoraDistributedTests : IClassFixture<TrainingFixture>
{
    readonly TrainingFixture _data;

    public LoraDistributedTests(TrainingFixture data)
    {
        TorchSetup.Init();
        _data = data;
    }

    [Fact]
    public void Two_ranks_with_zero1_match_one_rank_on_masked_chat_data()
    {
        using var dir = new TempDir();
        new Trainer(new TrainOptions { DataDir = _data.DataDir, OutDir = dir["base"], Model = "tiny", BatchSize = 4, SeqLen = 32, Steps = 3, Device = "cpu" }, TextWriter.Null).Run();
        // Conversations of different lengths: ranks see different numbers of trained tokens, so only the all-reduced
        // count gives one rank's mean.
        var rng = new Random(3);
        File.WriteAllLines(dir["chat.jsonl"], Enumerable.Range(0, 40).Select(i =>
            $$"""{"prompt":"item {{i}}","completion":"{{new string('a', 1 + rng.Next(20))}} done"}"""));
        ChatPreparer.Run([dir["chat.jsonl"]], new ChatPrepareOptions { OutDir = dir["chat"], Tokenizer = "byte", SeqLen = 64, ValFraction = 0 });
        string[] Args(string run, int ranks) =>
        [
            "train", "--data", dir["chat"], "--out", run, "--init-from", dir["base"], "--batch-size", (2 / ranks).ToString(), "--steps", "3",
            "--lr", "1e-2", "--warmup", "0", "--device", "cpu", "--lora-rank", "4", "--lora-targets", "q,o,up", "--zero", ranks == 2 ? "1" : "0",
        ];
        var one = Mpirun(1, Args(dir["one"], 1));
        Assert.True(one.ExitCode == 0, one.Out + one.Err);
        var two = Mpirun(2, Args(dir["two"], 2));
        Assert.True(two.ExitCode == 0, two.Out + two.Err);
        Assert.Contains("ZeRO-1", two.Out);
        var l1 = Losses(dir["one"]);
        var l2 = Losses(dir["two"]);
        Assert.Equal(3, l2.Count);
        // 1e-5 relative: the same sums over the same tokens, grouped by rank before the all-reduce (fp32).
        for (int i = 0; i < 3; i++) Assert.True(Math.Abs(l1[i] - l2[i]) <= 1e-5 * l1[i], $"step {i + 1}: {l1[i]} vs {l2[i]}");
        var a = SafeTensors.Read(Path.Combine(new CheckpointStore(dir["one"]).Latest()!, PeftAdapter.WeightsFile)).Tensors;
        var b = SafeTensors.Read(Path.Combine(new CheckpointStore(dir["two"]).Latest()!, PeftAdapter.WeightsFile)).Tensors;
        // All adapters as one vector, relative to its norm (as DistributedTests: Adam normalises rounding noise where a
        // true gradient is ~0, so single elements are no meaningful comparison).
        var va = TorchSharp.torch.cat(a.Keys.Order().Select(k => a[k].flatten()).ToList());
        var vb = TorchSharp.torch.cat(a.Keys.Order().Select(k => b[k].flatten()).ToList());
        double rel = (va - vb).norm().item<float>() / va.norm().item<float>();
        Assert.True(rel < 1e-4, $"adapters differ by {rel:E2} of their norm");
        Assert.Equal(2, Directory.GetFiles(new CheckpointStore(dir["two"]).Latest()!, "optimizer-rank*").Length);   // ZeRO-1: one shard per rank
    }

    static List<double> Losses(string run) =>
        MetricsLog.Read(Path.Combine(run, "metrics.jsonl")).Where(r => (string?)r["type"] == "train").Select(r => (double)r["loss"]!).ToList();

    static CliProcess.Result Mpirun(int ranks, string[] args) => Supercluster.Tests.Distributed.DistributedTests.Mpirun(ranks, args);
}
