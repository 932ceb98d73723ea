using System.Diagnostics;
using System.Runtime.InteropServices;
using Supercluster.Checkpointing;
using Supercluster.Data;
using Supercluster.Training;
using TorchSharp;

namespace Supercluster.Tests.Reliability;

/// <summary>
/// The job every drill runs: a tiny model, 6 steps, a checkpoint every 2, on CPU through the real CLI. Its
/// uninterrupted run is made once; every drill's recovered run must end in exactly its state (the pass rule).
/// </summary>
public sealed class DrillJob : IDisposable
{
    public const string Collection = "Fault drills";
    public const int Steps = 6;
    readonly TempDir _dir = new();

    public DrillJob()
    {
        TorchSetup.Init();
        var rng = new Random(16);
        string[] words = ["union", "people", "congress", "nation", "economy", "liberty", "peace", "grows", "endures", "defends"];
        var docs = Enumerable.Range(0, 30).Select(_ => new Document(string.Join(" ", Enumerable.Range(0, 60).Select(_ => words[rng.Next(words.Length)])) + ".")).ToList();
        Preparer.Run(docs, new PrepareOptions { OutDir = DataDir, Tokenizer = "byte", ValFraction = 0.1 });
        var r = CliProcess.Run(Train(Uninterrupted));
        Assert.True(r.ExitCode == 0, r.Err);
    }

    public string DataDir => _dir["data"];
    public string Uninterrupted => _dir["uninterrupted"];

    /// <summary>
    /// The same job run once under <c>launch</c> (mpirun, one rank), for drills recovered by <c>launch</c>: a rank under
    /// mpirun may get another CPU thread count than a plain process, and libtorch's reductions then round differently.
    /// </summary>
    public string UninterruptedUnderLaunch
    {
        get
        {
            lock (_dir)
            {
                string run = _dir["uninterrupted-launch"];
                if (!Directory.Exists(run))
                {
                    var r = CliProcess.Run(["launch", "--nproc", "1", "--", .. Train(run)]);
                    Assert.True(r.ExitCode == 0, r.Out + r.Err);
                }
                return run;
            }
        }
    }
    public string NewRun(string name) => _dir[$"{name}-{Guid.NewGuid():N}"];

    /// <summary>The job's train command; <paramref name="extra"/> option/value pairs replace or add options.</summary>
    public string[] Train(string run, params string[] extra)
    {
        var o = new Dictionary<string, string>
        {
            ["--data"] = DataDir, ["--out"] = run, ["--model"] = "tiny", ["--batch-size"] = "2", ["--seq-len"] = "16", ["--steps"] = Steps.ToString(),
            ["--lr"] = "3e-3", ["--warmup"] = "1", ["--checkpoint-every"] = "2", ["--device"] = "cpu", ["--seed"] = "7",
        };
        for (int i = 0; i < extra.Length; i += 2) o[extra[i]] = extra[i + 1];
        return ["train", .. o.SelectMany(kv => new[] { kv.Key, kv.Value })];
    }

    public CliProcess.Result Resume(string run, params string[] extra)
    {
        var r = CliProcess.Run(Train(run, ["--resume", "auto", .. extra]));
        Assert.True(r.ExitCode == 0, r.Out + r.Err);
        return r;
    }

    public void Dispose() => _dir.Dispose();
}

/// <summary>One uninterrupted run shared by every drill class.</summary>
[CollectionDefinition(DrillJob.Collection)]
public sealed class DrillCollection : ICollectionFixture<DrillJob>;

/// <summary>
/// A named fault, injected into a real training process, followed by the recovery an operator (or <c>launch</c>)
/// would do. Modelled on NVIDIA resiliency extension's fault types; the pass rule is torchft's: after recovery the
/// model and optimizer state equal the uninterrupted run's exactly (<see cref="PassRule"/>).
/// </summary>
public abstract record FaultDrill(string Name)
{
    /// <summary>Injects the fault into a fresh run directory, checks the failure looks as it should, and recovers.</summary>
    public abstract void InjectAndRecover(DrillJob job, string run);

    /// <summary>The uninterrupted run to compare with: run the same way (plain process, or under launch).</summary>
    public virtual string Reference(DrillJob job) => job.Uninterrupted;

    public override string ToString() => Name;

    public static readonly FaultDrill[] All = [new Kill(), new Hang(), new Sigterm(), new CrashInCheckpoint(), new CorruptFile(), new ConcurrentWriter()];

    /// <summary>SIGKILL of the trainer right after step 3 (no finally blocks, no flush); resume from step 2.</summary>
    public sealed record Kill() : FaultDrill("kill")
    {
        public override void InjectAndRecover(DrillJob job, string run)
        {
            Assert.Equal(137, CliProcess.Run(job.Train(run, "--fault", "kill:rank=0:step=3")).ExitCode);
            Assert.Contains("step_0000002 at step 2", job.Resume(run).Out);
        }
    }

    /// <summary>The trainer stops making progress at step 3; <c>launch</c> notices by heartbeat, kills and restarts it.</summary>
    public sealed record Hang() : FaultDrill("hang")
    {
        public override void InjectAndRecover(DrillJob job, string run)
        {
            var r = CliProcess.Run(TimeSpan.FromMinutes(4), ["launch", "--nproc", "1", "--max-restarts", "1", "--hang-timeout", "8", "--", .. job.Train(run, "--fault", "hang:rank=0:step=3")]);
            Assert.True(r.ExitCode == 0, r.Out + r.Err);
            Assert.Contains("no progress for 8 s", r.Out);
            Assert.Contains("job finished after 1 restart(s)", r.Out);
        }

        public override string Reference(DrillJob job) => job.UninterruptedUnderLaunch;
    }

    /// <summary>A real SIGTERM at the end of step 3 (preemption): the step finishes, a checkpoint is written, exit 0.</summary>
    public sealed record Sigterm() : FaultDrill("sigterm")
    {
        public override void InjectAndRecover(DrillJob job, string run)
        {
            var r = CliProcess.Run(job.Train(run, "--fault", "sigterm:step=3"));
            Assert.True(r.ExitCode == 0, r.Out + r.Err);
            Assert.Contains("stopped by SIGTERM after step 3 of 6", r.Out);
            Assert.EndsWith("step_0000003", new CheckpointStore(run).Latest()); // not a multiple of --checkpoint-every: nothing lost
            Assert.Contains("step_0000003 at step 3", job.Resume(run).Out);
        }
    }

    /// <summary>Death after the checkpoint's files are written and before its manifest: the torn step-4 write is never chosen.</summary>
    public sealed record CrashInCheckpoint() : FaultDrill("crash in checkpoint")
    {
        public override void InjectAndRecover(DrillJob job, string run)
        {
            Assert.NotEqual(0, CliProcess.Run(job.Train(run, "--fault", "crash-in-checkpoint:step=4")).ExitCode);
            Assert.Contains("step_0000002 at step 2", job.Resume(run).Out);
        }
    }

    /// <summary>One flipped byte in the newest checkpoint's weights: its SHA-256 fails, the one before is used.</summary>
    public sealed record CorruptFile() : FaultDrill("corrupt file")
    {
        public override void InjectAndRecover(DrillJob job, string run)
        {
            Assert.Equal(137, CliProcess.Run(job.Train(run, "--fault", "kill:rank=0:step=4")).ExitCode);
            string model = Path.Combine(new CheckpointStore(run).Latest()!, ModelCheckpoint.ModelFile);
            var bytes = File.ReadAllBytes(model);
            bytes[bytes.Length / 2] ^= 0x01;
            File.WriteAllBytes(model, bytes);
            var r = job.Resume(run);
            Assert.Contains("warning: skipping checkpoint", r.Out);
            Assert.Contains("step_0000002 at step 2", r.Out);
        }
    }

    /// <summary>
    /// A second trainer on the same run directory while the first holds it: refused with exit 2 naming the holder,
    /// nothing of the first touched. The first then dies (SIGKILL), leaving a stale lock that the resume takes over.
    /// </summary>
    public sealed record ConcurrentWriter() : FaultDrill("concurrent writer")
    {
        public override void InjectAndRecover(DrillJob job, string run)
        {
            // The first job hangs after its step-4 checkpoint, holding the lock (a marker file says it got there).
            using var first = CliProcess.Start(null, job.Train(run, "--fault", "hang:rank=0:step=4"));
            string marker = FaultPlan.MarkerPath(run, "hang", 0, 4);
            Assert.True(SpinWait.SpinUntil(() => File.Exists(marker) || first.HasExited, TimeSpan.FromMinutes(3)), "the first job never reached step 4");
            Assert.False(first.HasExited);
            string metricsBefore = File.ReadAllText(Path.Combine(run, "metrics.jsonl"));

            var second = CliProcess.Run(job.Train(run, "--resume", "auto"));
            Assert.Equal(2, second.ExitCode);
            Assert.Contains($"in use by another training job, pid {first.Id}", second.Err);
            Assert.Single(second.Err.Trim().Split('\n'));
            Assert.Equal(metricsBefore, File.ReadAllText(Path.Combine(run, "metrics.jsonl")));

            first.Kill();
            first.WaitForExit();
            var r = job.Resume(run);
            Assert.Contains("stale lock", r.Out);
            Assert.Contains("step_0000004 at step 4", r.Out);
        }
    }
}

/// <summary>
/// torchft's rule: after recovery, the state equals the uninterrupted run's exactly. On CPU the run is deterministic,
/// so "exactly" means bitwise: every weight, both Adam moments, the step counters and every step's logged loss.
/// </summary>
public static class PassRule
{
    static Dictionary<string, torch.Tensor> Tensors(string dir, string pattern) =>
        Directory.GetFiles(dir, pattern).Order(StringComparer.Ordinal)
            .SelectMany(f => SafeTensors.Read(f).Tensors.Select(kv => ($"{Path.GetFileName(f)}:{kv.Key}", kv.Value)))
            .ToDictionary(x => x.Item1, x => x.Value);

    static List<double> Losses(string run) =>
        MetricsLog.Read(Path.Combine(run, "metrics.jsonl")).Where(r => (string?)r["type"] == "train").Select(r => (double)r["loss"]!).ToList();

    public static void AssertSameState(string uninterrupted, string recovered)
    {
        string a = new CheckpointStore(uninterrupted).Latest()!, b = new CheckpointStore(recovered).Latest()!;
        Assert.Equal(Path.GetFileName(a), Path.GetFileName(b));
        var sa = ModelCheckpoint.ReadState(a);
        var sb = ModelCheckpoint.ReadState(b);
        Assert.Equal((sa.Step, sa.OptimizerSteps, sa.TokensSeen, sa.Data, sa.RngState), (sb.Step, sb.OptimizerSteps, sb.TokensSeen, sb.Data, sb.RngState));
        foreach (var pattern in new[] { ModelCheckpoint.ModelFile, "optimizer-*.safetensors" })
        {
            var ta = Tensors(a, pattern);
            var tb = Tensors(b, pattern);
            Assert.NotEmpty(ta);
            Assert.Equal(ta.Keys.Order(), tb.Keys.Order());
            foreach (var k in ta.Keys) Assert.True(ta[k].eq(tb[k]).all().item<bool>(), $"{k} differs from the uninterrupted run");
        }
        Assert.Equal(Losses(uninterrupted), Losses(recovered));
        Assert.DoesNotContain(Directory.GetDirectories(Path.Combine(recovered, "checkpoints")), d => Path.GetFileName(d).StartsWith(".tmp-"));
    }
}

/// <summary>Sends POSIX signals (Process.Kill only knows SIGKILL).</summary>
public static class Signals
{
    public const int SIGTERM = 15;
    [DllImport("libc", SetLastError = true)] static extern int kill(int pid, int sig);
    public static void Send(Process p, int signal) => Assert.Equal(0, kill(p.Id, signal));
}
