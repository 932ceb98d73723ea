using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace Supercluster.Checkpointing;

/// <summary>
/// The checkpoints of one run, <c>RUN_DIR/checkpoints/step_NNNNNNN/</c>. A checkpoint is written into a temporary
/// directory, every file fsynced, a manifest with each file's SHA-256 written last, then the directory renamed:
/// a directory without a manifest that verifies is never chosen.
/// </summary>
public sealed partial class CheckpointStore(string runDir)
{
    public const string ManifestFile = "manifest.json";
    public string Root { get; } = Path.Combine(runDir, "checkpoints");

    [GeneratedRegex(@"^step_(\d{7,})$")] private static partial Regex StepDir();

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
        Directory.CreateDirectory(Root);
        string tmp = Path.Combine(Root, $".tmp-{DirName(step)}");
        if (Directory.Exists(tmp)) Directory.Delete(tmp, recursive: true); // left by a crash
        Directory.CreateDirectory(tmp);
        return tmp;
    }

    /// <summary>Fsyncs every file, writes the manifest last, and renames the directory into place.</summary>
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
            string old = final + ".old";
            if (Directory.Exists(old)) Directory.Delete(old, recursive: true);
            Directory.Move(final, old);
            Directory.Move(tmp, final);
            Directory.Delete(old, recursive: true);
        }
        else
        {
            Directory.Move(tmp, final);
        }
        return final;
    }

    /// <summary>Complete checkpoints, newest first. Corrupt ones are reported through <paramref name="warn"/> and skipped.</summary>
    public IEnumerable<(long Step, string Dir)> Complete(Action<string>? warn = null)
    {
        if (!Directory.Exists(Root)) yield break;
        var candidates = Directory.GetDirectories(Root)
            .Select(d => (Dir: d, M: StepDir().Match(Path.GetFileName(d))))
            .Where(x => x.M.Success)
            .Select(x => (Step: long.Parse(x.M.Groups[1].Value, CultureInfo.InvariantCulture), x.Dir))
            .OrderByDescending(x => x.Step)
            .ToList();
        foreach (var c in candidates)
        {
            var problem = Verify(c.Dir);
            if (problem is null) yield return c;
            else warn?.Invoke($"warning: skipping checkpoint {c.Dir}: {problem}");
        }
    }

    /// <summary>Newest complete checkpoint, or null.</summary>
    public string? Latest(Action<string>? warn = null) => Complete(warn).Select(c => c.Dir).FirstOrDefault();

    /// <summary>Deletes all but the newest <paramref name="keep"/> complete checkpoints, and leftovers of interrupted writes.</summary>
    public void Prune(int keep)
    {
        if (!Directory.Exists(Root)) return;
        foreach (var (_, dir) in Complete().Skip(keep).ToList()) Directory.Delete(dir, recursive: true);
        foreach (var d in Directory.GetDirectories(Root, ".tmp-*")) Directory.Delete(d, recursive: true);
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
