using System.Text.Json;
using System.Text.Json.Nodes;

namespace Supercluster.Evaluation;

/// <summary>One multiple-choice question: a context, its candidate endings and the index of the right one.</summary>
/// <param name="Line">1-based line of the task file it came from (for messages).</param>
public sealed record TaskExample(string Context, IReadOnlyList<string> Endings, int Label, int Line);

/// <summary>
/// A multiple-choice task file (JSONL, one question per line). Two shapes, told apart per line:
/// <list type="bullet">
/// <item>HellaSwag as published (rowanz/hellaswag <c>hellaswag_{train,val}.jsonl</c>, and the Hugging Face copy whose
/// label is a string): <c>ctx</c>, <c>endings</c> (4), <c>label</c>; without <c>ctx</c>, the context is
/// <c>ctx_a</c> + " " + <c>ctx_b</c> (HellaSwag's own definition of ctx). <c>activity_label</c>, <c>ind</c>,
/// <c>source_id</c>, <c>split</c>… are ignored, as llm.c ignores them.</item>
/// <item>generic: <c>{"context": "...", "endings": ["...", ...], "label": i}</c> (ARC, MMLU… converted by the user).</item>
/// </list>
/// Anything else is bad input naming file, line and field.
/// </summary>
public sealed record TaskSet(string Path, string Name, IReadOnlyList<TaskExample> Examples, IReadOnlyDictionary<string, int> Formats)
{
    /// <summary>The files of a comma-separated list (<c>train --eval-task a.jsonl,b.jsonl</c>); none for null.</summary>
    public static IReadOnlyList<string> Files(string? list) =>
        (list ?? "").Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);

    /// <summary>Reads <paramref name="path"/>; <paramref name="limit"/> &gt; 0 keeps only its first questions.</summary>
    public static TaskSet Load(string path, int limit = 0)
    {
        if (!File.Exists(path)) throw new BadInputException($"task file '{path}' does not exist");
        var examples = new List<TaskExample>();
        var formats = new Dictionary<string, int>();
        int line = 0;
        foreach (var text in File.ReadLines(path))
        {
            line++;
            if (string.IsNullOrWhiteSpace(text)) continue;
            if (limit > 0 && examples.Count == limit) break;
            JsonObject record;
            try
            {
                record = JsonNode.Parse(text) as JsonObject ?? throw new BadInputException($"{path}:{line}: expected a JSON object per line (JSONL)");
            }
            catch (JsonException e)
            {
                throw new BadInputException($"{path}:{line}: not JSON ({e.Message.Split('\n')[0]}); expected one JSON object per line (JSONL)");
            }
            string format = record.ContainsKey("ctx") || record.ContainsKey("ctx_a") ? "hellaswag" : "generic";
            examples.Add(format == "hellaswag" ? HellaSwag(record, path, line) : Generic(record, path, line));
            formats[format] = formats.GetValueOrDefault(format) + 1;
        }
        if (examples.Count == 0) throw new BadInputException($"{path}: no questions (expected JSONL with context/endings/label or HellaSwag's ctx/endings/label)");
        return new TaskSet(path, System.IO.Path.GetFileNameWithoutExtension(path), examples, formats);
    }

    static TaskExample HellaSwag(JsonObject r, string path, int line)
    {
        string context = r.ContainsKey("ctx")
            ? String(r, "ctx", path, line, allowEmpty: true)
            : Join(String(r, "ctx_a", path, line, allowEmpty: true), r.ContainsKey("ctx_b") ? String(r, "ctx_b", path, line, allowEmpty: true) : "");
        var endings = Endings(r, path, line);
        if (!r.ContainsKey("label"))
            throw new BadInputException($"{path}:{line}: field 'label' is missing (HellaSwag's test split has no labels; use hellaswag_val.jsonl)");
        return new TaskExample(context, endings, Label(r, endings.Count, path, line), line);
    }

    // HellaSwag: "If ctx_b is nonempty, then ctx is the same thing as ctx_a, followed by a space, then ctx_b."
    static string Join(string a, string b) => b.Length == 0 ? a : a + " " + b;

    static TaskExample Generic(JsonObject r, string path, int line)
    {
        if (!r.ContainsKey("context"))
            throw new BadInputException($"{path}:{line}: field 'context' is missing (expected {{\"context\", \"endings\", \"label\"}} or HellaSwag's ctx/endings/label)");
        string context = String(r, "context", path, line, allowEmpty: true);
        var endings = Endings(r, path, line);
        if (!r.ContainsKey("label")) throw new BadInputException($"{path}:{line}: field 'label' is missing (the index of the right ending)");
        return new TaskExample(context, endings, Label(r, endings.Count, path, line), line);
    }

    static string String(JsonObject r, string field, string path, int line, bool allowEmpty)
    {
        if (r[field] is JsonValue v && v.TryGetValue<string>(out var s) && (allowEmpty || s.Length > 0)) return s;
        throw new BadInputException($"{path}:{line}: field '{field}' must be a {(allowEmpty ? "" : "non-empty ")}string");
    }

    static List<string> Endings(JsonObject r, string path, int line)
    {
        if (!r.ContainsKey("endings")) throw new BadInputException($"{path}:{line}: field 'endings' is missing (a list of candidate endings)");
        if (r["endings"] is not JsonArray a) throw new BadInputException($"{path}:{line}: field 'endings' must be a list of strings");
        if (a.Count < 2) throw new BadInputException($"{path}:{line}: field 'endings' has {a.Count} ending{(a.Count == 1 ? "" : "s")}, expected at least 2");
        var list = new List<string>(a.Count);
        for (int i = 0; i < a.Count; i++)
        {
            if (a[i] is JsonValue v && v.TryGetValue<string>(out var s) && s.Trim().Length > 0) list.Add(s);
            else throw new BadInputException($"{path}:{line}: field 'endings[{i}]' must be a non-empty string");
        }
        return list;
    }

    /// <summary>An integer, or a string holding one (the Hugging Face copy of HellaSwag), in [0, endings).</summary>
    static int Label(JsonObject r, int endings, string path, int line)
    {
        long? value = r["label"] is JsonValue v
            ? v.TryGetValue<long>(out var n) ? n
            : v.TryGetValue<double>(out var d) && d == Math.Floor(d) && Math.Abs(d) < int.MaxValue ? (long)d
            : v.TryGetValue<string>(out var s) && long.TryParse(s, System.Globalization.NumberStyles.Integer, System.Globalization.CultureInfo.InvariantCulture, out var p) ? p
            : null
            : null;
        if (value is null) throw new BadInputException($"{path}:{line}: field 'label' = {r["label"]?.ToJsonString() ?? "null"}, expected an integer index into 'endings'");
        if (value < 0 || value >= endings)
            throw new BadInputException($"{path}:{line}: field 'label' = {value} is out of range: {endings} endings, expected 0..{endings - 1}");
        return (int)value;
    }
}
