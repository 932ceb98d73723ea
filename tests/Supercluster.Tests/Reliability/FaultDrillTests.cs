using System.Diagnostics;
using Supercluster.Checkpointing;

namespace Supercluster.Tests.Reliability;

/// <summary>
/// The standing fault drills (docs/reliability.md): each named fault is injected into a real training process, the
/// run is recovered, and the one pass rule applies: model and optimizer state equal the uninterrupted run's, bitwise.
/// </summary>
[Collection(DrillJob.Collection)]
public class FaultDrillTests(DrillJob job)
{
    public static TheoryData<string> Drills => new(FaultDrill.All.Select(d => d.Name));

    [Theory]
    [MemberData(nameof(Drills))]
    public void After_recovery_the_state_equals_the_uninterrupted_runs(string drill)
    {
        string run = job.NewRun(drill.Replace(' ', '-'));
        var d = FaultDrill.All.Single(d => d.Name == drill);
        d.InjectAndRecover(job, run);
        PassRule.AssertSameState(d.Reference(job), run);
    }

    /// <summary>
    /// A real full disk: the run directory on a tmpfs with room for one checkpoint and not two. The step-4 write fails:
    /// one line "disk full", exit 1, its temporary folder removed; after space is freed, --resume auto finishes the run.
    /// </summary>
    [TmpfsFact]
    public void Full_disk_during_a_checkpoint_write_then_resume_after_freeing_space()
    {
        string run = job.NewRun("disk-full");
        Directory.CreateDirectory(run);
        long checkpoint = Directory.GetFiles(new CheckpointStore(job.Uninterrupted).Latest()!).Sum(f => new FileInfo(f).Length);
        Tmpfs.Mount(run, checkpoint * 3 / 2 + 64 * 1024);
        try
        {
            var r = CliProcess.Run(job.Train(run, "--keep-checkpoints", "1"));
            Assert.Equal(1, r.ExitCode);
            var err = r.Err.Trim().Split('\n');   // progress lines, then the one error line; no stack trace
            Assert.Single(err, l => l.Contains("disk full"));
            Assert.StartsWith("error: disk full: checkpoint step_0000004", err[^1]);
            Assert.DoesNotContain("Unhandled exception", r.Err);
            var store = new CheckpointStore(run);
            Assert.DoesNotContain(Directory.GetDirectories(store.Root), d => Path.GetFileName(d).StartsWith(".tmp-"));
            Assert.EndsWith("step_0000002", store.Latest());

            Tmpfs.Resize(run, checkpoint * 4);   // the operator frees space
            Assert.Contains("step_0000002 at step 2", job.Resume(run, "--keep-checkpoints", "1").Out);
            PassRule.AssertSameState(job.Uninterrupted, run);
        }
        finally { Tmpfs.Unmount(run); }
    }

    [Fact]
    public void Resume_auto_refuses_a_run_whose_checkpoints_all_fail_and_changes_nothing()
    {
        string run = job.NewRun("none-verify");
        Assert.Equal(137, CliProcess.Run(job.Train(run, "--fault", "kill:rank=0:step=2")).ExitCode);
        string ckpt = new CheckpointStore(run).Latest()!;
        string model = Path.Combine(ckpt, ModelCheckpoint.ModelFile);
        var bytes = File.ReadAllBytes(model);
        bytes[^3] ^= 0x80;
        File.WriteAllBytes(model, bytes);
        string metrics = File.ReadAllText(Path.Combine(run, "metrics.jsonl"));

        var r = CliProcess.Run(job.Train(run, "--resume", "auto"));
        Assert.Equal(2, r.ExitCode);
        Assert.Contains($"error: --resume auto: {Path.Combine(run, "checkpoints")} has 1 checkpoint(s), none verifies", r.Err);
        Assert.Equal(metrics, File.ReadAllText(Path.Combine(run, "metrics.jsonl")));   // history not truncated
        Assert.Equal(bytes, File.ReadAllBytes(model));                                  // checkpoint not overwritten
        Assert.Equal([Path.GetFileName(ckpt)], Directory.GetDirectories(Path.Combine(run, "checkpoints")).Select(Path.GetFileName));
    }
}

/// <summary>A test that needs to mount a tmpfs (root, as in CI): skipped with the reason elsewhere.</summary>
public sealed class TmpfsFactAttribute : FactAttribute
{
    public TmpfsFactAttribute()
    {
        if (Tmpfs.Unavailable() is { } why) Skip = $"needs a size-limited tmpfs for a real full disk: {why}";
    }
}

/// <summary>Size-limited tmpfs mounts through mount(8).</summary>
public static class Tmpfs
{
    static (int Code, string Err) Mount(params string[] args)
    {
        var psi = new ProcessStartInfo("mount") { RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        try
        {
            using var p = Process.Start(psi)!;
            string err = p.StandardError.ReadToEnd();
            p.WaitForExit();
            return (p.ExitCode, err.Trim());
        }
        catch (System.ComponentModel.Win32Exception e) { return (-1, e.Message); }
    }

    public static string? Unavailable()
    {
        if (!OperatingSystem.IsLinux()) return "not Linux";
        if (Environment.UserName != "root") return "not root";
        using var probe = new TempDir();
        var (code, err) = Mount("-t", "tmpfs", "-o", "size=64k", "tmpfs", probe.Path);
        if (code != 0) return $"mount -t tmpfs failed: {err}";
        Unmount(probe.Path);
        return null;
    }

    public static void Mount(string dir, long bytes)
    {
        var (code, err) = Mount("-t", "tmpfs", "-o", $"size={bytes}", "tmpfs", dir);
        Assert.True(code == 0, err);
    }

    public static void Resize(string dir, long bytes)
    {
        var (code, err) = Mount("-o", $"remount,size={bytes}", dir);
        Assert.True(code == 0, err);
    }

    public static void Unmount(string dir)
    {
        var psi = new ProcessStartInfo("umount") { ArgumentList = { dir }, RedirectStandardError = true };
        using var p = Process.Start(psi)!;
        p.WaitForExit();
    }
}
