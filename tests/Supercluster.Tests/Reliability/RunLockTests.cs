using System.Diagnostics;
using System.Text.Json;
using Supercluster.Training;

namespace Supercluster.Tests.Reliability;

/// <summary>Issue 16 item 15: one training job per run directory; stale locks are recognised by pid.</summary>
public class RunLockTests
{
    static string Message(Action a) => Assert.Throws<BadInputException>(a).Message;

    [Fact]
    public void A_second_holder_is_refused_with_the_holders_pid_and_the_lock_is_free_again_after_release()
    {
        using var dir = new TempDir();
        using (var first = RunLock.Acquire(dir.Path))
        {
            var holder = RunLock.ReadFile(first.Path)!;
            Assert.Equal(Environment.ProcessId, holder.Pid);
            Assert.True(holder.IsAliveHere);
            // flock belongs to the open file, so a second open in this same process conflicts like another process would.
            string m = Message(() => RunLock.Acquire(dir.Path));
            Assert.Contains($"in use by another training job, pid {Environment.ProcessId} on {Environment.MachineName}", m);
            Assert.Contains("choose another --out", m);
        }
        Assert.Null(RunLock.ReadFile(Path.Combine(dir.Path, RunLock.FileName))); // released: emptied
        var notes = new List<string>();
        using var again = RunLock.Acquire(dir.Path, notes.Add);
        Assert.Empty(notes);
    }

    static void WriteHolder(string dir, int pid, long startTicks) =>
        File.WriteAllText(Path.Combine(dir, RunLock.FileName), JsonSerializer.Serialize(new RunLock.Holder(pid, Environment.MachineName, startTicks, "earlier", "train --out x")));

    [Fact]
    public void A_lock_left_by_a_process_that_is_gone_is_stale_and_taken_over_with_a_note()
    {
        using var dir = new TempDir();
        using var gone = Process.Start("true")!;
        gone.WaitForExit();
        WriteHolder(dir.Path, gone.Id, 12345);
        var notes = new List<string>();
        using var taken = RunLock.Acquire(dir.Path, notes.Add);
        Assert.Contains(notes, n => n.Contains($"stale lock of pid {gone.Id}") && n.Contains("no longer running"));
        Assert.Equal(Environment.ProcessId, RunLock.ReadFile(taken.Path)!.Pid);
    }

    [Fact]
    public void A_lock_naming_a_live_process_is_honoured_even_without_the_flock_and_a_reused_pid_is_not()
    {
        using var dir = new TempDir();
        using var live = Process.Start("sleep", "60")!;
        try
        {
            long ticks = RunLock.StartTicksOf(live.Id)!.Value;
            // As on a file system that ignores flock: the file names a running process.
            WriteHolder(dir.Path, live.Id, ticks);
            Assert.Contains($"pid {live.Id}", Message(() => RunLock.Acquire(dir.Path)));
            // Same pid, other start time: the pid was reused by an unrelated process, so the lock is stale.
            WriteHolder(dir.Path, live.Id, ticks + 1);
            var notes = new List<string>();
            using var taken = RunLock.Acquire(dir.Path, notes.Add);
            Assert.Contains(notes, n => n.Contains("stale lock"));
        }
        finally { live.Kill(); }
    }
}
