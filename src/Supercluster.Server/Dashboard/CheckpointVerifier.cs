using System.Collections.Concurrent;
using System.Globalization;
using System.Text.RegularExpressions;
using Supercluster.Checkpointing;

namespace Supercluster.Server.Dashboard;

/// <summary>
/// Complete checkpoints of a run for the dashboard, verified with <see cref="CheckpointStore.Verify"/> (SHA-256 of
/// every file) only when a file of the directory changed: the result is cached by the (name, size, mtime) of every
/// file in it. A page polling every 2 s re-hashed gigabytes per call before; now it lists a directory.
/// A directory name that is not a valid step (e.g. step_99999999999999999999) is reported, not thrown.
/// </summary>
public sealed partial class CheckpointVerifier
{
    readonly ConcurrentDictionary<string, (string Signature, string? Problem)> _cache = new();

    /// <summary>Verifications actually run (SHA-256 passes), for tests and the docs' numbers.</summary>
    public long Verifications => Interlocked.Read(ref _verifications);
    long _verifications;

    [GeneratedRegex(@"^step_(\d+)$")] private static partial Regex StepDir();

    public (List<(long Step, string Dir)> Complete, List<string> Problems) Scan(string runDir)
    {
        var complete = new List<(long, string)>();
        var problems = new List<string>();
        var root = Path.Combine(runDir, "checkpoints");
        if (!Directory.Exists(root)) return (complete, problems);
        foreach (var dir in Directory.GetDirectories(root))
        {
            var name = Path.GetFileName(dir);
            var m = StepDir().Match(name);
            if (!m.Success) continue;   // .tmp-* and .old folders of writes in progress
            if (!long.TryParse(m.Groups[1].Value, NumberStyles.None, CultureInfo.InvariantCulture, out var step))
            {
                problems.Add($"{name}: not a valid step number");
                continue;
            }
            var problem = Verify(dir);
            if (problem is null) complete.Add((step, dir));
            else problems.Add($"{name}: {problem}");
        }
        complete.Sort((a, b) => b.Item1.CompareTo(a.Item1));   // newest first, as CheckpointStore.Complete
        return (complete, problems);
    }

    string? Verify(string dir)
    {
        string signature;
        try
        {
            signature = string.Join('\n', new DirectoryInfo(dir).EnumerateFiles().OrderBy(f => f.Name, StringComparer.Ordinal)
                .Select(f => $"{f.Name}\t{f.Length}\t{f.LastWriteTimeUtc.Ticks}"));
        }
        catch (IOException) { return "unreadable directory"; }
        if (_cache.TryGetValue(dir, out var hit) && hit.Signature == signature) return hit.Problem;
        Interlocked.Increment(ref _verifications);
        string? problem;
        try { problem = CheckpointStore.Verify(dir); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { problem = "unreadable file"; }
        _cache[dir] = (signature, problem);
        return problem;
    }
}
