using System.Text;
using System.Text.Json;

namespace Supercluster.Data;

/// <summary>How input files are read: one document per file (txt), per line (jsonl) or per row (parquet).</summary>
public enum CorpusFormat { Auto, Txt, Jsonl, Parquet }

/// <summary>
/// Streams documents from files and folders (recursively, in ordinal path order so every run sees the same sequence).
/// Only one file's current row group / line is in memory at a time.
/// </summary>
public static class CorpusReader
{
    /// <summary>Parses <c>auto|txt|jsonl|parquet</c>.</summary>
    public static CorpusFormat ParseFormat(string value) =>
        Enum.TryParse<CorpusFormat>(value, ignoreCase: true, out var f) && Enum.IsDefined(f) && !int.TryParse(value, out _)
            ? f : throw new BadInputException($"unknown format '{value}'; expected one of: auto, txt, jsonl, parquet");

    /// <summary>Format an extension implies, or null when it implies none.</summary>
    public static CorpusFormat? FormatOf(string path) => Path.GetExtension(path).ToLowerInvariant() switch
    {
        ".txt" or ".md" => CorpusFormat.Txt,
        ".jsonl" or ".json" or ".ndjson" => CorpusFormat.Jsonl,
        ".parquet" => CorpusFormat.Parquet,
        _ => null,
    };

    /// <summary>
    /// The files <paramref name="inputs"/> name, with their formats, checked up front so a typo fails before any work.
    /// In auto mode files inside folders with other extensions are skipped; a file named directly must have a known one.
    /// </summary>
    public static IReadOnlyList<(string Path, CorpusFormat Format)> ListFiles(IEnumerable<string> inputs, CorpusFormat format)
    {
        var files = new List<(string, CorpusFormat)>();
        foreach (var input in inputs)
        {
            if (File.Exists(input))
            {
                var f = format != CorpusFormat.Auto ? format : FormatOf(input)
                    ?? throw new BadInputException($"input {input}: cannot tell the format from its extension; expected .txt/.md, .jsonl/.json or .parquet, or pass --format");
                files.Add((input, f));
            }
            else if (Directory.Exists(input))
            {
                string[] found;
                try { found = Directory.GetFiles(input, "*", SearchOption.AllDirectories); }
                catch (Exception e) when (e is UnauthorizedAccessException or IOException)
                {
                    throw new BadInputException($"input {input}: cannot list folder ({e.Message})");
                }
                Array.Sort(found, StringComparer.Ordinal);
                foreach (var file in found)
                {
                    var f = format != CorpusFormat.Auto ? format : FormatOf(file);
                    if (f is { } known) files.Add((file, known));
                }
            }
            else throw new BadInputException($"input {input} does not exist");
        }
        return files;
    }

    /// <summary>All documents of <paramref name="inputs"/>, streamed in order.</summary>
    public static IEnumerable<Document> Read(IEnumerable<string> inputs, CorpusFormat format = CorpusFormat.Auto, string textField = "text")
    {
        var files = ListFiles(inputs, format);
        return ReadFiles(files, textField);
    }

    static IEnumerable<Document> ReadFiles(IReadOnlyList<(string Path, CorpusFormat Format)> files, string textField)
    {
        foreach (var (path, format) in files)
        {
            var docs = format switch
            {
                CorpusFormat.Txt => [new Document(ReadText(path))],
                CorpusFormat.Jsonl => ReadJsonl(path, textField),
                CorpusFormat.Parquet => ParquetCorpus.Read(path, textField),
                _ => throw new InvalidOperationException(),
            };
            foreach (var d in docs) yield return d;
        }
    }

    static string ReadText(string path)
    {
        try { return File.ReadAllText(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new BadInputException($"input {path} cannot be read ({e.Message})");
        }
    }

    /// <summary>One JSON object per line; blank lines are skipped; <paramref name="textField"/> may be a dotted path.</summary>
    public static IEnumerable<Document> ReadJsonl(string path, string textField)
    {
        StreamReader reader;
        try { reader = new StreamReader(path, Encoding.UTF8, true, 1 << 20); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new BadInputException($"input {path} cannot be read ({e.Message})");
        }
        using (reader)
        {
            long lineNo = 0;
            while (reader.ReadLine() is { } line)
            {
                lineNo++;
                if (string.IsNullOrWhiteSpace(line)) continue;
                yield return ParseLine(path, lineNo, line, textField);
            }
        }
    }

    static Document ParseLine(string path, long lineNo, string line, string textField)
    {
        JsonDocument doc;
        try { doc = JsonDocument.Parse(line); }
        catch (JsonException e)
        {
            throw new BadInputException($"{path}:{lineNo}: malformed JSON ({e.Message.Split('.')[0]})");
        }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
                throw new BadInputException($"{path}:{lineNo}: expected a JSON object, found {root.ValueKind.ToString().ToLowerInvariant()}");
            var text = Find(root, textField);
            if (text is not { ValueKind: JsonValueKind.String } value)
            {
                var fields = string.Join(", ", root.EnumerateObject().Select(p => p.Name).Take(10));
                throw new BadInputException(text is null
                    ? $"{path}:{lineNo}: no text field '{textField}' (fields: {fields}); pass --text-field"
                    : $"{path}:{lineNo}: field '{textField}' is {text.Value.ValueKind.ToString().ToLowerInvariant()}, expected a string");
            }
            Dictionary<string, string>? meta = null;
            foreach (var p in root.EnumerateObject())
            {
                if (p.Name == textField) continue;
                string? s = p.Value.ValueKind switch
                {
                    JsonValueKind.String => p.Value.GetString(),
                    JsonValueKind.Number or JsonValueKind.True or JsonValueKind.False => p.Value.GetRawText(),
                    _ => null,
                };
                if (s is not null) (meta ??= new())[p.Name] = s;
            }
            return new Document(value.GetString()!, meta);
        }
    }

    /// <summary>Finds <c>a.b.c</c>; an exact top-level key with dots wins over the path.</summary>
    static JsonElement? Find(JsonElement root, string field)
    {
        if (root.TryGetProperty(field, out var direct)) return direct;
        var current = root;
        foreach (var part in field.Split('.'))
        {
            if (current.ValueKind != JsonValueKind.Object || !current.TryGetProperty(part, out current)) return null;
        }
        return current;
    }
}
