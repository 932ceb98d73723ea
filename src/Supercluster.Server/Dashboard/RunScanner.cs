using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Supercluster.Checkpointing;

namespace Supercluster.Server.Dashboard;

/// <summary>
/// Reads training runs for the dashboard: every directory under the root (or the root itself) with a
/// <c>config.json</c> or <c>metrics.jsonl</c>. Status: <b>finished</b> when the last train step reached
/// <c>options.steps</c>, <b>running</b> when metrics.jsonl changed in the last <see cref="StaleAfter"/>,
/// else <b>failed</b> (stopped before its last step). Metrics are read incrementally from a byte offset.
/// </summary>
public sealed class RunScanner(string root)
{
    public static TimeSpan StaleAfter { get; set; } = TimeSpan.FromSeconds(120);
    public const int MaxRecordsPerRead = 20000;

    public string Root { get; } = Path.GetFullPath(root);

    public IEnumerable<string> RunDirs()
    {
        if (!Directory.Exists(Root)) yield break;
        if (IsRun(Root)) yield return Root;
        foreach (var d in Directory.GetDirectories(Root).Order(StringComparer.Ordinal))
            if (IsRun(d)) yield return d;
    }

    static bool IsRun(string d) => File.Exists(Path.Combine(d, "config.json")) || File.Exists(Path.Combine(d, "metrics.jsonl"));

    /// <summary>The run called <paramref name="name"/> (its path relative to the root; "." is the root), or null.</summary>
    public string? Find(string name) => RunDirs().FirstOrDefault(d => NameOf(d) == name);

    public string NameOf(string dir) => Path.GetRelativePath(Root, dir);

    /// <summary>What a summary needs from metrics.jsonl, kept per run and advanced from the last byte read.</summary>
    sealed class Tail
    {
        public long Offset;
        public long BadLines;
        public JsonObject? LastTrain;
        public readonly List<(long Step, JsonNode? ValLoss)> Evals = [];
    }

    readonly System.Collections.Concurrent.ConcurrentDictionary<string, Tail> _tails = new();

    Tail Advance(string dir)
    {
        var tail = _tails.GetOrAdd(dir, _ => new Tail());
        lock (tail)
        {
            var f = Path.Combine(dir, "metrics.jsonl");
            if (File.Exists(f) && new FileInfo(f).Length < tail.Offset) { tail.Offset = 0; tail.BadLines = 0; tail.LastTrain = null; tail.Evals.Clear(); } // rewritten
            while (true)
            {
                var records = ReadFrom(dir, tail.Offset, out var next, out var bad);
                tail.BadLines += bad;
                foreach (var r in records)
                {
                    var type = r["type"] is JsonValue tv && tv.TryGetValue<string>(out var t) ? t : null;
                    if (type == "train") tail.LastTrain = r;
                    else if (type == "eval" && Step(r) is { } st) tail.Evals.Add((st, r["val_loss"]?.DeepClone()));
                }
                tail.Offset = next;
                if (records.Count < MaxRecordsPerRead) break;
            }
            return tail;
        }
    }

    readonly CheckpointVerifier _checkpoints = new();

    /// <summary>SHA-256 verifications run so far (each checkpoint once per change of its files).</summary>
    public long Verifications => _checkpoints.Verifications;

    /// <summary>A metrics record's "step" when it is a non-negative integer, else null (the line is then skipped and counted).</summary>
    static long? Step(JsonObject r) => r["step"] is JsonValue v && v.TryGetValue<long>(out var s) && s >= 0 ? s : null;

    /// <summary><see cref="Summary"/>, or for a run that cannot be read at all a summary with status "error" (never an exception).</summary>
    public JsonObject SafeSummary(string dir)
    {
        try { return Summary(dir); }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            return new JsonObject
            {
                ["name"] = NameOf(dir), ["status"] = "error", ["step"] = 0, ["steps"] = null, ["loss"] = null, ["val_loss"] = null,
                ["error"] = $"unreadable run ({e.GetType().Name})", ["checkpoints"] = new JsonArray(),
            };
        }
    }

    public JsonObject Summary(string dir)
    {
        var tail = Advance(dir);
        var config = ReadConfig(dir);
        long? steps = config is JsonObject co && co["options"] is JsonObject opts && opts["steps"] is JsonValue sv && sv.TryGetValue<long>(out var sn) ? sn : null;
        JsonObject? lastTrain;
        (long Step, JsonNode? ValLoss)[] evals;
        lock (tail) { lastTrain = tail.LastTrain?.DeepClone().AsObject(); evals = tail.Evals.ToArray(); }
        long lastStep = lastTrain is null ? 0 : Step(lastTrain) ?? 0;
        long badLines;
        lock (tail) badLines = tail.BadLines;
        var metricsFile = Path.Combine(dir, "metrics.jsonl");
        var changed = File.Exists(metricsFile) ? File.GetLastWriteTimeUtc(metricsFile) : Directory.GetLastWriteTimeUtc(dir);
        var (complete, problems) = _checkpoints.Scan(dir);
        // Finished: the last step was trained (metrics) or checkpointed; running: metrics still growing; else failed.
        bool done = steps is { } s && (lastStep >= s || complete.Any(c => c.Step >= s));
        string status = done ? "finished" : DateTime.UtcNow - changed < StaleAfter ? "running" : "failed";
        var checkpoints = new JsonArray();
        foreach (var (step, cdir) in complete)
        {
            var eval = evals.LastOrDefault(e => e.Step <= step);
            checkpoints.Add(new JsonObject
            {
                ["step"] = step, ["dir"] = Path.GetRelativePath(Root, cdir),
                ["val_loss"] = eval.ValLoss?.DeepClone(), ["val_loss_step"] = eval.ValLoss is null ? null : eval.Step,
            });
        }
        return new JsonObject
        {
            ["name"] = NameOf(dir), ["status"] = status, ["step"] = lastStep, ["steps"] = steps,
            ["loss"] = lastTrain?["loss"]?.DeepClone(),
            ["val_loss"] = evals.Length > 0 ? evals[^1].ValLoss?.DeepClone() : null,
            ["updated"] = changed.ToString("O"),
            ["config"] = config is null ? null : Relative(config.DeepClone()), ["checkpoints"] = checkpoints,
            // Flags, not failures: what was skipped and why.
            ["bad_metric_lines"] = badLines,
            ["bad_checkpoints"] = new JsonArray(problems.Select(p => (JsonNode)p).ToArray()),
            ["config_error"] = config is null or JsonObject ? null : "config.json is not a JSON object",
        };
    }

    /// <summary>
    /// Absolute paths in a config (data, out, init-from…) as paths relative to the runs directory, or just the file
    /// name when outside it: the dashboard never tells a visitor where things live on this machine.
    /// </summary>
    JsonNode Relative(JsonNode node)
    {
        switch (node)
        {
            case JsonObject o:
                foreach (var key in o.Select(kv => kv.Key).ToList())
                    if (o[key] is { } child) o[key] = Relative(child.DeepClone());
                return o;
            case JsonArray a:
                for (int i = 0; i < a.Count; i++)
                    if (a[i] is { } child) a[i] = Relative(child.DeepClone());
                return a;
            case JsonValue v when v.TryGetValue<string>(out var str) && str.Length > 1 && Path.IsPathRooted(str):
                var full = Path.GetFullPath(str);
                var rel = Path.GetRelativePath(Root, full);
                return JsonValue.Create(rel.StartsWith("..") || Path.IsPathRooted(rel) ? Path.GetFileName(full.TrimEnd('/')) : rel);
            default:
                return node;
        }
    }

    static JsonNode? ReadConfig(string dir)
    {
        var f = Path.Combine(dir, "config.json");
        if (!File.Exists(f)) return null;
        try { return JsonNode.Parse(File.ReadAllText(f)); }
        catch (Exception e) when (e is JsonException or IOException) { return new JsonObject { ["error"] = $"unreadable config.json ({e.GetType().Name})" }; }
    }

    /// <summary>
    /// Complete lines of metrics.jsonl from byte <paramref name="offset"/> on; <paramref name="next"/> is where the
    /// next read starts (a partly written last line is left for then). Unparseable lines are skipped.
    /// </summary>
    public List<JsonObject> ReadFrom(string dir, long offset, out long next, int max = MaxRecordsPerRead) => ReadFrom(dir, offset, out next, out _, max);

    /// <summary>As above; <paramref name="bad"/> counts the lines skipped (not JSON objects, or a "step" that is not a non-negative integer).</summary>
    public List<JsonObject> ReadFrom(string dir, long offset, out long next, out long bad, int max = MaxRecordsPerRead)
    {
        bad = 0;
        var list = new List<JsonObject>();
        next = offset;
        var f = Path.Combine(dir, "metrics.jsonl");
        if (!File.Exists(f)) return list;
        using var fs = new FileStream(f, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        if (offset > fs.Length) offset = 0; // file was rewritten (resume truncates): start over
        fs.Position = offset;
        next = offset;
        var buffer = new byte[1 << 16];
        var line = new MemoryStream();
        int n;
        while (list.Count < max && (n = fs.Read(buffer, 0, buffer.Length)) > 0)
        {
            int start = 0;
            for (int i = 0; i < n && list.Count < max; i++)
            {
                if (buffer[i] != (byte)'\n') continue;
                line.Write(buffer, start, i - start);
                next += line.Length + 1;
                if (!Parse(line.ToArray(), list)) bad++;
                line.SetLength(0);
                start = i + 1;
            }
            if (list.Count >= max) break;
            line.Write(buffer, start, n - start);
        }
        return list;
    }

    static bool Parse(byte[] line, List<JsonObject> list)
    {
        if (line.Length == 0) return true;
        try
        {
            if (JsonNode.Parse(Encoding.UTF8.GetString(line)) is not JsonObject o) return false;
            if (o.ContainsKey("step") && Step(o) is null) return false;
            list.Add(o);
            return true;
        }
        catch (JsonException) { return false; }
    }
}
