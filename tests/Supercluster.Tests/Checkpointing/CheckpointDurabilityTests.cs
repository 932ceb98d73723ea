using Supercluster.Checkpointing;

namespace Supercluster.Tests.Checkpointing;

/// <summary>Issue 16 items 14, 16 and 19 at the level of the checkpoint store (no training).</summary>
public class CheckpointDurabilityTests
{
    static CheckpointStore StoreWith(TempDir run, params long[] steps)
    {
        var store = new CheckpointStore(run.Path);
        foreach (var s in steps) store.Save(s, d => File.WriteAllText(Path.Combine(d, "data.bin"), $"payload {s}"));
        return store;
    }

    static void Corrupt(CheckpointStore store, long step) =>
        File.WriteAllText(Path.Combine(store.Root, CheckpointStore.DirName(step), "data.bin"), "bit rot");

    [Fact]
    public void Resume_auto_refuses_when_checkpoints_exist_but_none_verifies()
    {
        using var run = new TempDir();
        var store = StoreWith(run, 2, 4);
        Corrupt(store, 2);
        Corrupt(store, 4);
        var warnings = new List<string>();
        var e = Assert.Throws<BadInputException>(() => store.ResumePoint("auto", warnings.Add));
        Assert.Contains("2 checkpoint(s), none verifies", e.Message);
        Assert.Contains("--resume PATH", e.Message);
        Assert.Contains("new --out", e.Message);
        Assert.Equal(2, warnings.Count(w => w.Contains("skipping checkpoint")));
        // A fresh start on that directory is refused too (it would truncate the metrics and overwrite the checkpoints).
        Assert.Contains("already has checkpoints (2, none verifies)", Assert.Throws<BadInputException>(() => store.ResumePoint(null, _ => { })).Message);
        // An explicit path still works for a user who wants that checkpoint anyway... when it verifies; here it names the problem.
        Assert.Contains("corrupt", Assert.Throws<BadInputException>(() => store.ResumePoint(Path.Combine(store.Root, "step_0000004"), _ => { })).Message);
    }

    [Fact]
    public void Resume_auto_on_an_empty_or_fresh_directory_starts_from_scratch_and_picks_the_newest_that_verifies()
    {
        using var run = new TempDir();
        var store = new CheckpointStore(run.Path);
        Assert.Null(store.ResumePoint("auto", _ => { }));
        Directory.CreateDirectory(store.TempDir(2)); // a torn first write is not a checkpoint
        Assert.Null(store.ResumePoint("auto", _ => { }));
        store = StoreWith(run, 2, 4);
        Corrupt(store, 4);
        Assert.EndsWith("step_0000002", store.ResumePoint("auto", _ => { }));
    }

    [Fact]
    public void A_death_between_the_two_renames_of_a_rewrite_leaves_step_old_which_is_chosen_and_renamed_back()
    {
        using var run = new TempDir();
        var store = StoreWith(run, 2, 4);
        string final = Path.Combine(store.Root, "step_0000004");
        // The state Commit leaves when it dies after "final → final.old" and before "tmp → final".
        Directory.Move(final, final + ".old");
        Assert.Equal(final + ".old", store.Latest());
        Assert.Equal([4L, 2L], store.Complete().Select(c => c.Step));
        store.Prune(keep: 2);
        Assert.True(Directory.Exists(final));
        Assert.False(Directory.Exists(final + ".old"));
        Assert.Equal(final, store.Latest());

        // Death after the second rename, before deleting the old one: the new step_N wins, the .old is dropped.
        store.Save(4, d => File.WriteAllText(Path.Combine(d, "data.bin"), "payload 4 again"));
        Directory.CreateDirectory(final + ".old");
        File.WriteAllText(Path.Combine(final + ".old", "data.bin"), "stale");
        Assert.Equal(final, store.Latest());
        store.Prune(keep: 2);
        Assert.False(Directory.Exists(final + ".old"));
        Assert.Equal("payload 4 again", File.ReadAllText(Path.Combine(final, "data.bin")));
    }

    [Fact]
    public void A_full_disk_inside_a_checkpoint_write_removes_the_temporary_directory_and_says_disk_full()
    {
        using var run = new TempDir();
        var store = StoreWith(run, 2);
        // The IOException .NET raises for ENOSPC on Linux carries errno 28 in HResult; the real file system case is a fault drill.
        var e = Assert.Throws<DiskFullException>(() => store.Guard<string>(4, () =>
        {
            string tmp = store.BeginWrite(4);
            File.WriteAllText(Path.Combine(tmp, "model.safetensors"), new string('x', 1000));
            throw new IOException("No space left on device", 28);
        }));
        Assert.StartsWith("disk full: checkpoint step_0000004", e.Message);
        Assert.False(Directory.Exists(store.TempDir(4)));
        Assert.EndsWith("step_0000002", store.Latest());
        // Other I/O errors are not disk-full and pass through unchanged.
        Assert.IsNotType<DiskFullException>(Assert.ThrowsAny<IOException>(() => store.Guard<string>(6, () => throw new IOException("EIO", 5))));
    }

    [Fact]
    public void Durable_writes_replace_the_file_by_rename_not_in_place()
    {
        using var dir = new TempDir();
        string path = dir["config.json"];
        DurableFile.WriteAllText(path, "{\"old\": true}");
        // A reader that opened the old file keeps reading the old bytes: the new content is a new file renamed over it.
        // (An in-place rewrite would truncate what this reader sees.)
        using var reader = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        DurableFile.WriteAllText(path, "{\"new\": true}");
        Assert.Equal("{\"old\": true}", new StreamReader(reader).ReadToEnd());
        Assert.Equal("{\"new\": true}", File.ReadAllText(path));
        Assert.Equal(["config.json"], Directory.GetFiles(dir.Path).Select(Path.GetFileName));  // no temp file left
        DurableFile.FsyncDirectory(dir.Path);
        Assert.ThrowsAny<IOException>(() => DurableFile.FsyncDirectory(dir["missing"]));
    }
}
