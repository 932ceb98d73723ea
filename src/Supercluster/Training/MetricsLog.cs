using System.Text.Json;
using System.Text.Json.Nodes;

namespace Supercluster.Training;

/// <summary>
/// <c>RUN_DIR/metrics.jsonl</c>: one JSON object per line ("type": "train" | "eval" | "task_eval" | "sample"), flushed per line so
/// a dashboard can tail it. On resume, records after the resumed step are dropped so each step appears once.
/// </summary>
public sealed class MetricsLog : IDisposable
{
    readonly StreamWriter _w;

    public MetricsLog(string path, long resumeStep)
    {
        Path = path;
        if (File.Exists(path)) TruncateAfter(path, resumeStep);
        _w = new StreamWriter(new FileStream(path, FileMode.Append, FileAccess.Write, FileShare.Read)) { AutoFlush = true };
    }

    public string Path { get; }

    public void Write(JsonObject record) => _w.WriteLine(record.ToJsonString());

    static void TruncateAfter(string path, long step)
    {
        var keep = File.ReadLines(path).Where(l =>
        {
            try { return JsonNode.Parse(l)?["step"]?.GetValue<long>() is long s && s <= step; }
            catch (JsonException) { return false; } // a line cut by a crash
        }).ToList();
        string tmp = path + ".tmp";
        File.WriteAllLines(tmp, keep);
        File.Move(tmp, path, overwrite: true);
    }

    /// <summary>Reads the records of a metrics file (skipping a torn last line).</summary>
    public static List<JsonObject> Read(string path) =>
        File.ReadLines(path).Select(l => { try { return JsonNode.Parse(l) as JsonObject; } catch (JsonException) { return null; } })
            .Where(o => o is not null).Select(o => o!).ToList();

    public void Dispose() => _w.Dispose();
}
