using System.Diagnostics;
using System.Text.Json.Nodes;
using Supercluster.Checkpointing;
using Supercluster.Distributed;
using Supercluster.Tests.Training;
using Supercluster.Training;
using TorchSharp;

namespace Supercluster.Tests.Distributed;

/// <summary>Data parallelism and recovery under a real mpirun (CPU ranks, MPI collectives).</summary>
public class DistributedTests : IClassFixture<TrainingFixture>
{
    readonly TrainingFixture _data;
    const int GlobalRows = 6, Steps = 6;

    public DistributedTests(TrainingFixture data)
    {
        TorchSetup.Init();
        _data = data;
    }

    /// <summary>The test job's train command; <paramref name="extra"/> option/value pairs replace or add options.</summary>
    string[] TrainArgs(string run, int ranks, params string[] extra)
    {
        var o = new Dictionary<string, string>
        {
            ["--data"] = _data.DataDir, ["--out"] = run, ["--model"] = "tiny", ["--batch-size"] = (GlobalRows / ranks).ToString(), ["--seq-len"] = "32",
            ["--steps"] = Steps.ToString(), ["--lr"] = "3e-3", ["--warmup"] = "1", ["--checkpoint-every"] = "2", ["--device"] = "cpu", ["--seed"] = "3",
        };
        for (int i = 0; i < extra.Length; i += 2) o[extra[i]] = extra[i + 1];
        return ["train", .. o.SelectMany(kv => new[] { kv.Key, kv.Value })];
    }

    internal static CliProcess.Result Mpirun(int ranks, string[] args)
    {
        string[] full = [.. JobSupervisor.MpirunArgs(ranks), "dotnet", Path.Combine(AppContext.BaseDirectory, "Supercluster.Cli.dll"), .. args];
        var psi = new ProcessStartInfo(JobSupervisor.FindMpirun()) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in full) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var o = p.StandardOutput.ReadToEndAsync();
        var e = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(TimeSpan.FromMinutes(4))) { p.Kill(true); throw new TimeoutException("mpirun ran over 4 minutes"); }
        p.WaitForExit();
        return new CliProcess.Result(p.ExitCode, o.Result, e.Result);
    }

    internal static List<JsonObject> Train(string run) =>
        MetricsLog.Read(Path.Combine(run, "metrics.jsonl")).Where(r => (string?)r["type"] == "train").ToList();

    internal static List<double> Losses(string run) => Train(run).Select(r => (double)r["loss"]!).ToList();

    static Dictionary<string, torch.Tensor> FinalWeights(string run) =>
        SafeTensors.Read(Path.Combine(new CheckpointStore(run).Latest()!, ModelCheckpoint.ModelFile)).Tensors;

    static void AssertClose(List<double> expected, List<double> actual, double rel)
    {
        Assert.Equal(expected.Count, actual.Count);
        for (int i = 0; i < expected.Count; i++)
            Assert.True(Math.Abs(expected[i] - actual[i]) <= rel * Math.Abs(expected[i]), $"step {i + 1}: {expected[i]} vs {actual[i]}");
    }

    string Baseline(TempDir dir)
    {
        var r = CliProcess.Run(TrainArgs(dir["one"], 1));
        Assert.True(r.ExitCode == 0, r.Err);
        return dir["one"];
    }

    [Fact]
    public void Two_and_three_ranks_match_one_rank_with_the_same_global_batch_with_and_without_zero1()
    {
        using var dir = new TempDir();
        string one = Baseline(dir);
        var reference = Losses(one);
        var refWeights = FinalWeights(one);
        foreach (var (ranks, zero) in new[] { (2, 0), (3, 0), (2, 1), (3, 1) })
        {
            string run = dir[$"r{ranks}z{zero}"];
            var r = Mpirun(ranks, TrainArgs(run, ranks, "--zero", zero.ToString()));
            Assert.True(r.ExitCode == 0, $"{ranks} ranks zero {zero}: {r.Err}");
            Assert.Contains($"× {ranks} ranks = {GlobalRows * 32} tokens/step", r.Out);
            AssertClose(reference, Losses(run), 1e-5);
            // All parameters as one vector, relative to its norm. (Per tensor, the key bias of attention has an exactly-zero
            // true gradient, so Adam normalises rounding noise there; only the whole model is a meaningful comparison.)
            var w = FinalWeights(run);
            var a = torch.cat(refWeights.Keys.Order().Select(k => refWeights[k].flatten()).ToList());
            var b = torch.cat(refWeights.Keys.Order().Select(k => w[k].flatten()).ToList());
            double rel = (a - b).norm().item<float>() / a.norm().item<float>();
            Assert.True(rel < 1e-5, $"{ranks} ranks zero {zero}: final weights differ by {rel:E2} of their norm");
            // Per-rank step and communication times are recorded, so a straggler is visible.
            Assert.All(Train(run), rec => Assert.Equal(ranks, rec["rank_comm_ms"]!.AsArray().Count));
            if (zero == 1) Assert.Equal(ranks, Directory.GetFiles(new CheckpointStore(run).Latest()!, "optimizer-rank*").Length);
        }
    }

    [Theory]
    [InlineData("kill:rank=1:step=3")]
    [InlineData("hang:rank=1:step=3")]
    [InlineData("crash-in-checkpoint:step=4")]
    public void A_supervised_job_recovers_from_a_dead_hung_or_crashing_rank_with_an_identical_loss_record(string fault)
    {
        using var dir = new TempDir();
        var clean = Mpirun(2, TrainArgs(dir["clean"], 2));
        Assert.True(clean.ExitCode == 0, clean.Err);

        string run = dir["faulty"];
        var r = CliProcess.Run(TimeSpan.FromMinutes(4), ["launch", "--nproc", "2", "--max-restarts", "2", "--hang-timeout", "8", "--", .. TrainArgs(run, 2, "--fault", fault)]);
        Assert.True(r.ExitCode == 0, r.Out + r.Err);
        Assert.Contains("job finished after 1 restart(s)", r.Out);
        Assert.Equal(Losses(dir["clean"]), Losses(run));
        Assert.Equal(Enumerable.Range(1, Steps).Select(i => (long)i), Train(run).Select(x => (long)x["step"]!));

        var events = File.ReadAllLines(Path.Combine(run, "restarts.jsonl")).Select(l => JsonNode.Parse(l)!).ToList();
        var failure = Assert.Single(events, e => (string?)e["event"] == "failure");
        Assert.Single(events, e => (string?)e["event"] == "recovered");
        if (fault.StartsWith("kill")) Assert.Equal(1, (int?)failure["rank"]);
        if (fault.StartsWith("hang")) Assert.Contains("no progress", (string?)failure["reason"]);
        if (fault.StartsWith("crash")) Assert.Equal(2, (long)failure["resume_step"]!); // the torn step-4 checkpoint is never used
    }

    [Fact]
    public void A_job_checkpointed_on_two_ranks_resumes_on_three_with_the_same_loss_curve()
    {
        using var dir = new TempDir();
        string one = Baseline(dir);
        string run = dir["elastic"];
        var first = Mpirun(2, TrainArgs(run, 2, "--zero", "1", "--fault", "kill:rank=0:step=4"));
        Assert.NotEqual(0, first.ExitCode);
        Assert.Equal(4, Losses(run).Count);
        var second = Mpirun(3, TrainArgs(run, 3, "--zero", "1", "--resume", "auto"));
        Assert.True(second.ExitCode == 0, second.Err);
        Assert.Contains("resumed from", second.Out);
        AssertClose(Losses(one), Losses(run), 1e-5);
    }

    [Fact]
    public void A_corrupt_checkpoint_is_detected_and_the_previous_one_is_used()
    {
        using var dir = new TempDir();
        string run = dir["run"];
        Assert.Equal(0, CliProcess.Run(TrainArgs(run, 1)).ExitCode);
        string newest = new CheckpointStore(run).Latest()!;
        var model = Path.Combine(newest, ModelCheckpoint.ModelFile);
        var bytes = File.ReadAllBytes(model);
        bytes[^5] ^= 0xFF;
        File.WriteAllBytes(model, bytes);
        var r = CliProcess.Run(TrainArgs(run, 1, "--resume", "auto", "--steps", "8"));
        Assert.True(r.ExitCode == 0, r.Err);
        Assert.Contains("warning: skipping checkpoint", r.Out);
        Assert.Contains("SHA-256", r.Out);
        Assert.Contains("step_0000004 at step 4", r.Out);
    }

    [Fact]
    public void Bad_launches_fail_with_one_clear_line()
    {
        using var dir = new TempDir();
        var nccl = CliProcess.Run(TrainArgs(dir["a"], 1, "--backend", "nccl"));
        Assert.Equal(2, nccl.ExitCode);
        Assert.Contains("--backend nccl needs --device cuda", nccl.Err);

        var ncclCuda = CliProcess.Run(TrainArgs(dir["b"], 1, "--backend", "nccl", "--device", "cuda"));
        Assert.Equal(2, ncclCuda.ExitCode);
        Assert.Contains("CUDA is not available", ncclCuda.Err);

        // 2 ranks × 3 rows × 32 tokens = 192 does not divide 320.
        var batch = Mpirun(2, TrainArgs(dir["c"], 2, "--total-batch-tokens", "320"));
        Assert.NotEqual(0, batch.ExitCode);
        Assert.Contains("not a multiple of batch-size × seq-len × world size = 3 × 32 × 2 = 192", batch.Err);

        // No mpirun on PATH: launch says what to install.
        var psi = new ProcessStartInfo(Environment.ProcessPath!.EndsWith("dotnet") ? Environment.ProcessPath : "/usr/bin/dotnet")
        { RedirectStandardError = true, RedirectStandardOutput = true };
        string[] launch = [Path.Combine(AppContext.BaseDirectory, "Supercluster.Cli.dll"), "launch", "--nproc", "2", "--", .. TrainArgs(dir["d"], 2)];
        foreach (var a in launch) psi.ArgumentList.Add(a);
        psi.Environment["PATH"] = dir.Path;
        using var p = Process.Start(psi)!;
        string err = p.StandardError.ReadToEnd();
        p.WaitForExit();
        Assert.Equal(2, p.ExitCode);
        Assert.Equal("error: launch: mpirun not found on PATH; install Open MPI (Debian: apt-get install openmpi-bin libopenmpi-dev)", err.Trim());
    }
}
