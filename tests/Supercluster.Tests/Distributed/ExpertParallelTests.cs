using System.Text.Json.Nodes;
using Supercluster.Checkpointing;
using Supercluster.Tests.Training;
using Supercluster.Training;

namespace Supercluster.Tests.Distributed;

/// <summary>
/// Expert parallelism under a real mpirun (2 CPU ranks, MPI all-to-all-v): EP 2 trains the same model as EP 1 (all experts
/// on every rank, data parallel), and a checkpoint written with EP 2 resumes with EP 1.
/// Tolerance 1e-5 relative on the loss: the two layouts sum the same fp32 products in a different order (expert outputs
/// travel, gradients are summed by all-to-all then divided instead of averaged by all-reduce), nothing else differs.
/// </summary>
public class ExpertParallelTests : IClassFixture<TrainingFixture>
{
    readonly TrainingFixture _data;
    const int Steps = 20;

    public ExpertParallelTests(TrainingFixture data)
    {
        TorchSetup.Init();
        _data = data;
    }

    string[] TrainArgs(string run, params string[] extra) =>
    [
        "train", "--data", _data.DataDir, "--out", run, "--model", "moe-tiny", "--batch-size", "2", "--seq-len", "32", "--steps", Steps.ToString(),
        "--lr", "3e-3", "--warmup", "2", "--checkpoint-every", "10", "--device", "cpu", "--seed", "4", "--eval-tokens", "256", "--sample-every", "20", "--sample-tokens", "8", .. extra,
    ];

    static List<JsonObject> TrainRecords(string run) =>
        MetricsLog.Read(Path.Combine(run, "metrics.jsonl")).Where(r => (string?)r["type"] == "train").ToList();

    static void AssertSameLosses(IReadOnlyList<JsonObject> expected, IReadOnlyList<JsonObject> actual)
    {
        Assert.Equal(expected.Count, actual.Count);
        for (int i = 0; i < expected.Count; i++)
        {
            double e = (double)expected[i]["loss"]!, a = (double)actual[i]["loss"]!;
            Assert.Equal((long)expected[i]["step"]!, (long)actual[i]["step"]!);
            Assert.True(Math.Abs(e - a) <= 1e-5 * Math.Abs(e), $"step {expected[i]["step"]}: EP 1 loss {e}, EP 2 loss {a}");
        }
    }

    [Fact]
    public void Ep2_equals_ep1_over_20_steps_and_resumes_as_ep1()
    {
        using var dir = new TempDir();
        var ep1 = DistributedTests.Mpirun(2, TrainArgs(dir["ep1"]));
        Assert.True(ep1.ExitCode == 0, ep1.Out + ep1.Err);
        var ep2 = DistributedTests.Mpirun(2, TrainArgs(dir["ep2"], "--ep", "2"));
        Assert.True(ep2.ExitCode == 0, ep2.Out + ep2.Err);
        Assert.Contains("EP 2 (4 experts per rank)", ep2.Out);

        var a = TrainRecords(dir["ep1"]);
        var b = TrainRecords(dir["ep2"]);
        Assert.Equal(Steps, a.Count);
        AssertSameLosses(a, b);
        Assert.True((double)b[^1]["moe"]!["all_to_all_ms"]! > 0, "EP 2 timed its all-to-all");
        Assert.True((double)b[^1]["loss"]! < (double)b[0]["loss"]! - 0.3, "it learns");

        // The EP 2 checkpoint holds every expert under its Mixtral name, as the EP 1 one does, with the same values.
        var w1 = SafeTensors.Read(Path.Combine(new CheckpointStore(dir["ep1"]).Latest()!, ModelCheckpoint.ModelFile)).Tensors;
        var w2 = SafeTensors.Read(Path.Combine(new CheckpointStore(dir["ep2"]).Latest()!, ModelCheckpoint.ModelFile)).Tensors;
        Assert.Equal(w1.Keys.Order(), w2.Keys.Order());
        Assert.Contains("model.layers.1.block_sparse_moe.experts.7.w2.weight", w2.Keys);
        foreach (var (name, t) in w1) Assert.True(t.allclose(w2[name], rtol: 1e-3, atol: 1e-5), name);
        var step10 = Path.Combine(dir["ep2"], "checkpoints", CheckpointStore.DirName(10));
        Assert.Equal(2, Directory.GetFiles(step10, "optimizer-experts-ep*-of-00002.safetensors").Length);

        // EP 2 → EP 1: resume the step-10 checkpoint with all experts on every rank; steps 11..20 match the EP 1 run.
        var resumed = DistributedTests.Mpirun(2, TrainArgs(dir["resumed"], "--resume", step10));
        Assert.True(resumed.ExitCode == 0, resumed.Out + resumed.Err);
        Assert.Contains("resumed from", resumed.Out);
        AssertSameLosses(a.Skip(10).ToList(), TrainRecords(dir["resumed"]));
    }
}
