using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text.Json.Nodes;
using Supercluster.Checkpointing;
using Supercluster.Training;

namespace Supercluster.Tests.Reliability;

/// <summary>Issue 16 item 17 with signals sent from outside, as a scheduler or a user would.</summary>
[Collection(DrillJob.Collection)]
public class StopSignalTests(DrillJob job)
{
    /// <summary>Starts a long run and waits until it has logged its first training step (so its handlers are in place).</summary>
    static Process StartAndWaitForFirstStep(string[] args, string run, ConcurrentQueue<string> lines)
    {
        var p = CliProcess.Start(lines.Enqueue, args);
        string metrics = Path.Combine(run, "metrics.jsonl");
        bool started = SpinWait.SpinUntil(() => p.HasExited || (File.Exists(metrics) && MetricsLog.Read(metrics).Any(r => (string?)r["type"] == "train")), TimeSpan.FromMinutes(3));
        Assert.True(started && !p.HasExited, string.Join('\n', lines));
        return p;
    }

    static void WaitForExit(Process p)
    {
        if (!p.WaitForExit(TimeSpan.FromMinutes(3))) { p.Kill(true); Assert.Fail("did not exit"); }
        p.WaitForExit();
    }

    [Fact]
    public void A_second_sigterm_stops_at_once_without_a_checkpoint()
    {
        string run = job.NewRun("double-signal");
        var lines = new ConcurrentQueue<string>();
        // The run hangs after its first step (as a stuck collective would), so the first signal's graceful stop can never
        // finish before the second arrives: without the hang a tiny model's step can end, checkpoint and exit in between.
        using var p = StartAndWaitForFirstStep(job.Train(run, "--steps", "100000", "--checkpoint-every", "0", "--fault", "hang:rank=0:step=1"), run, lines);
        // Signal only once the hang has begun (its marker is written just before it sleeps): a signal between step 1's
        // metrics line and its stop check would be a first signal honoured with a checkpoint, as it should be.
        Assert.True(SpinWait.SpinUntil(() => File.Exists(FaultPlan.MarkerPath(run, "hang", 0, 1)) || p.HasExited, TimeSpan.FromMinutes(1)), string.Join('\n', lines));
        Assert.False(p.HasExited, string.Join('\n', lines));
        Signals.Send(p, Signals.SIGTERM);
        Assert.True(SpinWait.SpinUntil(() => lines.Any(l => l.StartsWith("SIGTERM received")) || p.HasExited, TimeSpan.FromMinutes(1)));
        Signals.Send(p, Signals.SIGTERM);
        WaitForExit(p);
        Assert.Equal(128 + Signals.SIGTERM, p.ExitCode);     // the default action: killed by the signal
        Assert.DoesNotContain(lines, l => l.StartsWith("stopped by"));
        Assert.Null(new CheckpointStore(run).Latest());
    }

    [Fact]
    public void Launch_forwards_sigterm_to_every_rank_which_checkpoint_the_same_step_and_exit_0_without_a_restart()
    {
        string run = job.NewRun("launch-sigterm");
        var lines = new ConcurrentQueue<string>();
        using var p = StartAndWaitForFirstStep(["launch", "--nproc", "2", "--", .. job.Train(run, "--steps", "100000", "--batch-size", "1", "--checkpoint-every", "0")], run, lines);
        Signals.Send(p, Signals.SIGTERM);
        WaitForExit(p);
        string output = string.Join('\n', lines);
        Assert.True(p.ExitCode == 0, output);
        Assert.Contains("[launch] SIGTERM received: forwarding to every rank", output);
        Assert.Contains("[launch] job stopped by SIGTERM after checkpointing", output);
        Assert.DoesNotContain("restarting", output);

        // Both ranks stopped after the same step and that step is checkpointed, with both ranks' data: nothing lost.
        long last = MetricsLog.Read(Path.Combine(run, "metrics.jsonl")).Where(r => (string?)r["type"] == "train").Select(r => (long)r["step"]!).Last();
        Assert.Contains($"stopped by SIGTERM after step {last} of 100000", output);
        string ckpt = new CheckpointStore(run).Latest()!;
        Assert.Equal(last, ModelCheckpoint.ReadState(ckpt).Step);
        Assert.Equal(2, ModelCheckpoint.ReadState(ckpt).WorldSize);
        Assert.False(File.Exists(Path.Combine(run, "restarts.jsonl")) && File.ReadAllLines(Path.Combine(run, "restarts.jsonl")).Any(l => (string?)JsonNode.Parse(l)!["event"] == "failure"));
        Assert.Null(RunLock.ReadFile(Path.Combine(run, RunLock.FileName)));   // released by the supervisor
    }
}
