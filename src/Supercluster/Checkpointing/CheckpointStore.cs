using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace Supercluster.Checkpointing;

/// <summary>
/// The checkpoints of one run, <c>RUN_DIR/checkpoints/step_NNNNNNN/</c>. A checkpoint is written into a temporary
/// directory, every file fsynced, a manifest with each file's SHA-256 written last, then the directory renamed:
/// a directory without a manifest that verifies is never chosen. Re-writing a step moves the old directory to
/// <c>step_N.old</c> first; a death between the two renames leaves only that, which is still a candidate and is
/// renamed back by the next writer.
/// </summary>
public sealed partial class CheckpointStore(string runDir)
{
    public const string ManifestFile = "manifest.json";
    const string OldSuffix = ".old";
    public string RunDir { get; } = runDir;
    public string Root { get; } = Path.Combine(runDir, "checkpoints");

    [GeneratedRegex(@"^step_(\d{7,})(\.old)?$")] private static partial Regex StepDir();

    public static string DirName(long step) => $"step_{step:D7}";

    /// <summary>Writes a checkpoint for <paramref name="step"/>: <paramref name="writeFiles"/> fills a temporary directory.</summary>
    /// <param name="beforeManifest">Called after the files and before the manifest (fault injection hooks in here).</param>
    public string Save(long step, Action<string> writeFiles, Action? beforeManifest = null)
    {
        string tmp = BeginWrite(step);
        writeFiles(tmp);
        beforeManifest?.Invoke();
        return Commit(step, tmp);
    }

    /// <summary>Creates the (empty) temporary directory for <paramref name="step"/>; several ranks may then write into it.</summary>
    public string BeginWrite(long step)
    {
        if (!Directory.Exists(Root))
        {
            Directory.CreateDirectory(Root);
            DurableFile.FsyncDirectory(Path.GetDirectoryName(Path.GetFullPath(Root))!);
        }
        string tmp = TempDir(step);
        if (Directory.Exists(tmp)) Directory.Delete(tmp, recursive: true); // left by a crash
        Directory.CreateDirectory(tmp);
        return tmp;
    }

    /// <summary>Where the files of <paramref name="step"/> are written before the commit renames them into place.</summary>
    public string TempDir(long step) => Path.Combine(Root, $".tmp-{DirName(step)}");

    /// <summary>
    /// Runs one checkpoint write of <paramref name="step"/>. On a full disk the step's temporary directory is removed at
    /// once (left behind, it keeps the disk full and the next start fails too) and a <see cref="DiskFullException"/> says so.
    /// </summary>
    public T Guard<T>(long step, Func<T> write)
    {
        try { return write(); }
        catch (IOException e) when (DurableFile.IsDiskFull(e))
        {
            string tmp = TempDir(step);
            try { if (Directory.Exists(tmp)) Directory.Delete(tmp, recursive: true); }
            catch (IOException) { } // another rank removed it first
            string free = Directory.Exists(Root) ? $"{new DriveInfo(Path.GetFullPath(Root)).AvailableFreeSpace / 1e6:F1} MB free" : "";
            throw new DiskFullException($"disk full: checkpoint {DirName(step)} could not be written to {Root} ({e.Message}; {free} after removing its partial files). " +
                "Free space, then continue with --resume auto", e);
        }
    }

    /// <summary>Fsyncs every file, writes the manifest last, renames the directory into place, and fsyncs the parent.</summary>
    public string Commit(long step, string tmp)
    {
        string final = Path.Combine(Root, DirName(step));
        var files = Directory.GetFiles(tmp).Select(Path.GetFileName).Order(StringComparer.Ordinal).ToList();
        foreach (var f in files) FsyncFile(Path.Combine(tmp, f!));
        var manifest = new Manifest(step, files.ToDictionary(f => f!, f => new FileEntry(new FileInfo(Path.Combine(tmp, f!)).Length, Sha256(Path.Combine(tmp, f!)))));
        string manifestPath = Path.Combine(tmp, ManifestFile);
        File.WriteAllText(manifestPath, JsonSerializer.Serialize(manifest, JsonOptions));
        FsyncFile(manifestPath);

        if (Directory.Exists(final))
        {
            // Same step written again (e.g. a re-run after resume): move the old one aside, then drop it.
            // A death between the two renames leaves only step_N.old: Complete() still offers it, Prune() renames it back.
            string old = final + OldSuffix;
            if (Directory.Exists(old)) Directory.Delete(old, recursive: true);
            Directory.Move(final, old);
            Directory.Move(tmp, final);
            DurableFile.FsyncDirectory(Root);
            Directory.Delete(old, recursive: true);
        }
        else
        {
            Directory.Move(tmp, final);
        }
        DurableFile.FsyncDirectory(Root);
        return final;
    }

    /// <summary>Complete checkpoints, newest first. Corrupt ones are reported through <paramref name="warn"/> and skipped.</summary>
    public IEnumerable<(long Step, string Dir)> Complete(Action<string>? warn = null)
    {
        // Per step: step_N, else step_N.old (left by a death between the two renames of a re-write).
        foreach (var group in Candidates(warn).GroupBy(c => c.Step).OrderByDescending(g => g.Key))
        {
            foreach (var c in group.OrderBy(c => c.Dir.EndsWith(OldSuffix)))
            {
                var problem = Verify(c.Dir);
                if (problem is null) { yield return c; break; }
                warn?.Invoke($"warning: skipping checkpoint {c.Dir}: {problem}");
            }
        }
    }

    /// <summary>Every directory named like a checkpoint (step_N or step_N.old), verified or not.</summary>
    List<(long Step, string Dir)> Candidates(Action<string>? warn = null)
    {
        if (!Directory.Exists(Root)) return [];
        var list = new List<(long, string)>();
        foreach (var d in Directory.GetDirectories(Root))
        {
            var m = StepDir().Match(Path.GetFileName(d));
            if (!m.Success) continue;
            if (long.TryParse(m.Groups[1].Value, NumberStyles.None, CultureInfo.InvariantCulture, out long step)) list.Add((step, d));
            else warn?.Invoke($"warning: skipping checkpoint {d}: step number out of range");
        }
        return list;
    }

    /// <summary>
    /// The checkpoint a training run starts from: null = from scratch. <paramref name="resume"/> null refuses a run
    /// directory that has checkpoints; "auto" takes the newest that verifies and refuses when some exist but none
    /// verifies (starting over would truncate the metrics and overwrite checkpoints whose weights may be intact);
    /// anything else is a checkpoint or run directory.
    /// </summary>
    public string? ResumePoint(string? resume, Action<string> warn)
    {
        int found = Candidates().Count;
        if (resume is null)
        {
            if (found == 0) return null;
            string which = Latest() is { } latest ? latest : $"{found}, none verifies";
            throw new BadInputException($"--out {RunDir}: already has checkpoints ({which}); pass --resume auto to continue it or choose another --out");
        }
        if (resume != "auto") return Resolve(resume, warn);
        var chosen = Latest(warn);
        if (chosen is null && found > 0)
            throw new BadInputException($"--resume auto: {Root} has {found} checkpoint(s), none verifies (warnings above say why); " +
                "pass --resume PATH to continue from one of them anyway, or a new --out to start over");
        return chosen;
    }

    /// <summary>Newest complete checkpoint, or null.</summary>
    public string? Latest(Action<string>? warn = null) => Complete(warn).Select(c => c.Dir).FirstOrDefault();

    /// <summary>Deletes all but the newest <paramref name="keep"/> complete checkpoints, and leftovers of interrupted writes.</summary>
    public void Prune(int keep)
    {
        if (!Directory.Exists(Root)) return;
        RecoverOld();
        foreach (var (_, dir) in Complete().Skip(keep).ToList()) Directory.Delete(dir, recursive: true);
        foreach (var d in Directory.GetDirectories(Root, ".tmp-*")) Directory.Delete(d, recursive: true);
    }

    /// <summary>step_N.old without step_N: a re-write died between its renames; put the old one back. With a step_N that verifies: drop it.</summary>
    void RecoverOld()
    {
        foreach (var old in Directory.GetDirectories(Root, "step_*" + OldSuffix))
        {
            string final = old[..^OldSuffix.Length];
            if (!Directory.Exists(final))
            {
                Directory.Move(old, final);
                DurableFile.FsyncDirectory(Root);
            }
            else if (Verify(final) is null) Directory.Delete(old, recursive: true);
        }
    }

    /// <summary>Null if <paramref name="dir"/> holds a manifest whose files all exist with matching size and SHA-256; else what is wrong.</summary>
    public static string? Verify(string dir)
    {
        string path = Path.Combine(dir, ManifestFile);
        if (!File.Exists(path)) return "no manifest (incomplete write)";
        Manifest? m;
        try { m = JsonSerializer.Deserialize<Manifest>(File.ReadAllText(path), JsonOptions); }
        catch (JsonException e) { return $"unreadable manifest: {e.Message}"; }
        if (m?.Files is null || m.Files.Count == 0) return "empty manifest";
        foreach (var (name, entry) in m.Files)
        {
            string f = Path.Combine(dir, name);
            if (!File.Exists(f)) return $"{name} is missing";
            if (new FileInfo(f).Length != entry.Bytes) return $"{name} has {new FileInfo(f).Length} bytes, manifest says {entry.Bytes}";
            if (Sha256(f) != entry.Sha256) return $"{name} fails its SHA-256 checksum";
        }
        return null;
    }

    /// <summary>A checkpoint directory, or a run directory (its newest complete checkpoint).</summary>
    public static string Resolve(string path, Action<string>? warn = null)
    {
        if (File.Exists(Path.Combine(path, ManifestFile)))
        {
            var problem = Verify(path);
            return problem is null ? path : throw new BadInputException($"{path}: checkpoint is corrupt: {problem}");
        }
        if (Directory.Exists(Path.Combine(path, "checkpoints")))
            return new CheckpointStore(path).Latest(warn) ?? throw new BadInputException($"{path}: run has no complete checkpoint");
        throw new BadInputException($"{path}: not a checkpoint directory (no {ManifestFile}) nor a run directory (no checkpoints/)");
    }

    static string Sha256(string path)
    {
        using var f = File.OpenRead(path);
        return Convert.ToHexString(SHA256.HashData(f)).ToLowerInvariant();
    }

    static void FsyncFile(string path)
    {
        using var f = new FileStream(path, FileMode.Open, FileAccess.ReadWrite);
        f.Flush(flushToDisk: true);
    }

    sealed record FileEntry(long Bytes, string Sha256);
    sealed record Manifest(long Step, Dictionary<string, FileEntry> Files);

    static readonly JsonSerializerOptions JsonOptions = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower, WriteIndented = true };
}
