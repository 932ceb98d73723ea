using System.Diagnostics;
using System.Text.Json.Nodes;
using Supercluster.Checkpointing;
using Supercluster.Distributed;
using Supercluster.Model;
using Supercluster.Parallelism;
using Supercluster.Tests.Training;
using Supercluster.Training;

namespace Supercluster.Tests.Parallelism;

/// <summary>
/// <c>train --tp</c> end to end under a real mpirun (CPU ranks, MPI): 20-step loss records equal to one rank with the
/// same global batch and seed, and checkpoints that resume on another layout with the same losses. Tolerance 1e-5
/// relative: fp32 sums split over ranks round in another order (see <see cref="TensorParallelTests"/>).
/// </summary>
public class TensorParallelTrainingTests : IClassFixture<TrainingFixture>
{
    readonly TrainingFixture _data;
    const int GlobalRows = 4, Steps = 20;

    public TensorParallelTrainingTests(TrainingFixture data)
    {
        TorchSetup.Init();
        _data = data;
    }

    string[] TrainArgs(string run, string model, int dp, params string[] extra)
    {
        var o = new Dictionary<string, string>
        {
            ["--data"] = _data.DataDir, ["--out"] = run, ["--model"] = model, ["--batch-size"] = (GlobalRows / dp).ToString(), ["--seq-len"] = "16",
            ["--steps"] = Steps.ToString(), ["--lr"] = "3e-3", ["--warmup"] = "1", ["--checkpoint-every"] = "10", ["--device"] = "cpu", ["--seed"] = "3",
        };
        for (int i = 0; i < extra.Length; i += 2) o[extra[i]] = extra[i + 1];
        return ["train", .. o.SelectMany(kv => kv.Value == "" ? new[] { kv.Key } : new[] { kv.Key, kv.Value })];
    }

    static CliProcess.Result Mpirun(int ranks, string[] args) => Supercluster.Tests.Distributed.DistributedTests.Mpirun(ranks, args);

    static CliProcess.Result Run(int ranks, string[] args) => ranks == 1 ? CliProcess.Run(args) : Mpirun(ranks, args);

    static Dictionary<long, double> Losses(string run) =>
        MetricsLog.Read(Path.Combine(run, "metrics.jsonl")).Where(r => (string?)r["type"] == "train").ToDictionary(r => (long)r["step"]!, r => (double)r["loss"]!);

    static void AssertClose(Dictionary<long, double> expected, Dictionary<long, double> actual, string what)
    {
        Assert.NotEmpty(actual);
        foreach (var (step, loss) in actual)
            Assert.True(Math.Abs(expected[step] - loss) <= 1e-5 * expected[step], $"{what}, step {step}: {expected[step]} vs {loss}");
    }

    [Theory]
    [InlineData("tiny", 4, "")]                         // gpt2: TP2 × DP2, resumed on one rank
    [InlineData("llama-tiny", 2, "--sequence-parallel")] // llama: TP2 + sequence parallelism, resumed at DP 2
    public void Losses_equal_one_rank_for_20_steps_and_a_checkpoint_resumes_on_another_layout(string model, int ranks, string extra)
    {
        using var dir = new TempDir();
        var one = Run(1, TrainArgs(dir["one"], model, 1));
        Assert.True(one.ExitCode == 0, one.Err);
        var reference = Losses(dir["one"]);
        Assert.Equal(Steps, reference.Count);

        int dp = ranks / 2;
        string[] flags = extra == "" ? ["--tp", "2", "--zero", "1"] : ["--tp", "2", extra, ""];   // TP2 × DP2 with ZeRO-1: sharded optimizer state, saved by name
        var tp = Run(ranks, TrainArgs(dir["tp"], model, dp, flags));
        Assert.True(tp.ExitCode == 0, tp.Out + tp.Err);
        Assert.Contains("tp groups: " + (ranks == 4 ? "[0,1] [2,3]" : "[0,1]"), tp.Out);
        if (ranks == 4) Assert.Contains("dp groups: [0,2] [1,3]", tp.Out);
        if (extra != "") Assert.Contains("sequence parallel: saves", tp.Out);
        AssertClose(reference, Losses(dir["tp"]), $"{model} on {ranks} ranks {string.Join(' ', flags)}");
        // Per-group communication time is recorded.
        var rec = MetricsLog.Read(Path.Combine(dir["tp"], "metrics.jsonl")).First(r => (string?)r["type"] == "train");
        Assert.True(rec["comm_ms_by_group"]!.AsObject().ContainsKey("tp"), rec.ToJsonString());

        // The step-10 checkpoint holds full tensors under HF names whatever the layout ...
        string ckpt = Path.Combine(dir["tp"], "checkpoints", CheckpointStore.DirName(10));
        var (weights, _) = SafeTensors.Read(Path.Combine(ckpt, ModelCheckpoint.ModelFile));
        var (oneWeights, _) = SafeTensors.Read(Path.Combine(dir["one"], "checkpoints", CheckpointStore.DirName(10), ModelCheckpoint.ModelFile));
        Assert.Equal(oneWeights.Keys.Order(), weights.Keys.Order());
        foreach (var (k, v) in oneWeights) Assert.Equal(v.shape, weights[k].shape);
        // ... and resumes on another layout (one rank; DP 2) with the same global batch and the same losses.
        int resumeRanks = ranks == 4 ? 1 : 2;
        var resumed = Run(resumeRanks, TrainArgs(dir["resumed"], model, resumeRanks, "--resume", ckpt));
        Assert.True(resumed.ExitCode == 0, resumed.Out + resumed.Err);
        var after = Losses(dir["resumed"]);
        Assert.Equal(Enumerable.Range(11, 10).Select(i => (long)i), after.Keys.Order());
        AssertClose(reference, after, $"{model} resumed from {ranks} ranks on {resumeRanks}");
        if (ranks != 4) return;
        // The other way: a one-rank checkpoint (flat optimizer state) resumes at TP 2, its state re-sharded by name.
        var up = Run(2, TrainArgs(dir["up"], model, 1, "--tp", "2", "--resume", Path.Combine(dir["one"], "checkpoints", CheckpointStore.DirName(10))));
        Assert.True(up.ExitCode == 0, up.Out + up.Err);
        AssertClose(reference, Losses(dir["up"]), $"{model} resumed from one rank at TP 2");
    }

    [Fact]
    public void Launch_recovers_a_tp2_run_after_one_rank_is_killed_with_the_losses_of_one_rank()
    {
        using var dir = new TempDir();
        var one = Run(1, TrainArgs(dir["one"], "tiny", 1));
        Assert.True(one.ExitCode == 0, one.Err);
        // Rank 1 dies (SIGKILL of itself) after step 12; launch restarts the job, which resumes from the step-10 checkpoint.
        string run = dir["faulty"];
        var r = CliProcess.Run(TimeSpan.FromMinutes(4), ["launch", "--nproc", "2", "--max-restarts", "1", "--", .. TrainArgs(run, "tiny", 1, "--tp", "2", "--fault", "kill:rank=1:step=12")]);
        Assert.True(r.ExitCode == 0, r.Out + r.Err);
        Assert.Contains("job finished after 1 restart(s)", r.Out);
        var losses = Losses(run);
        Assert.Equal(Enumerable.Range(1, Steps).Select(i => (long)i), losses.Keys.Order());
        AssertClose(Losses(dir["one"]), losses, "tp2 recovered by launch");
    }

    [Theory]
    [InlineData(new[] { "--tp", "3" }, "--tp 3 × --cp 1 × --pp 1 = 3 does not divide the world size 1")]
    [InlineData(new[] { "--sequence-parallel" }, "--sequence-parallel needs --tp > 1")]
    [InlineData(new[] { "--tp", "0" }, "--tp 0: expected a positive integer")]
    [InlineData(new[] { "--pp", "2" }, "--tp 1 × --cp 1 × --pp 2 = 2 does not divide the world size 1")]
    public void Bad_layout_flags_exit_2_with_one_line_naming_the_flag(string[] flags, string message)
    {
        using var dir = new TempDir();
        var r = CliProcess.Run([.. TrainArgs(dir["run"], "tiny", 1), .. flags]);
        Assert.Equal(2, r.ExitCode);
        Assert.Contains(message, r.Err);
        Assert.False(File.Exists(Path.Combine(dir["run"], "metrics.jsonl")));
    }

    static ModelConfig Llama => ModelPresets.Get("llama-tiny") with { VocabSize = 257 };   // 4 heads, 2 kv heads, ffn 172

    [Theory]
    [InlineData(4, false, 16, "--tp 4: n_kv_head 2 is not divisible by 4")]
    [InlineData(8, false, 16, "--tp 8: n_head 4 is not divisible by 8")]
    [InlineData(2, true, 15, "--sequence-parallel with --tp 2: --seq-len 15 is not divisible by 2")]
    [InlineData(1, true, 16, "--sequence-parallel needs --tp > 1")]
    public void A_layout_the_model_cannot_split_is_refused_naming_the_flag(int tp, bool sp, int seqLen, string message)
    {
        var e = Assert.Throws<BadInputException>(() => Parallelize.Validate(Llama with { PadVocabMultiple = Parallelize.PadVocabMultiple(1, tp) }, new ParallelDims(Tp: tp, Dp: 1), sp, seqLen));
        Assert.Contains(message, e.Message);
    }

    [Fact]
    public void Vocabulary_and_mlp_width_must_split_over_tp_and_padding_makes_the_vocabulary_split()
    {
        var c = Llama with { FfnHidden = 174, NHead = 2, NKvHead = 2 };
        Assert.Contains("ffn_hidden 174 is not divisible by 4", Assert.Throws<BadInputException>(() => Parallelize.Validate(c with { NHead = 4, NKvHead = 4 }, new ParallelDims(Tp: 4), false, 16)).Message);
        Assert.Contains("vocabulary tables have 257 rows, not divisible by 2", Assert.Throws<BadInputException>(() => Parallelize.Validate(Llama, new ParallelDims(Tp: 2), false, 16)).Message);
        Assert.Equal(2, Parallelize.PadVocabMultiple(1, 2));
        Assert.Equal(128, Parallelize.PadVocabMultiple(128, 2));
        Assert.Equal(384, Parallelize.PadVocabMultiple(128, 3));
        Parallelize.Validate(Llama with { PadVocabMultiple = 2 }, new ParallelDims(Tp: 2), true, 16);   // 258 rows split
    }
}
