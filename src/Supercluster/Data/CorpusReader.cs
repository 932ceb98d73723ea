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

    /// <summary>All documents of <paramref name="inputs"/>, streamed in order; <paramref name="warn"/> hears about invalid UTF-8.</summary>
    public static IEnumerable<Document> Read(IEnumerable<string> inputs, CorpusFormat format = CorpusFormat.Auto, string textField = "text", Action<string>? warn = null)
    {
        var files = ListFiles(inputs, format);
        return ReadPart(files, textField, 0, 1, warn);
    }

    /// <summary>
    /// The documents rank <paramref name="rank"/> of <paramref name="world"/> owns, in input order. The files are laid
    /// end to end and cut into <paramref name="world"/> equal byte ranges; a rank owns every JSONL record (line) whose
    /// first byte lies in its range, and every txt/Parquet file whose first byte does (those are not split). Ranks in
    /// order therefore read exactly the sequence one process reads. <paramref name="progress"/> gets bytes consumed.
    /// </summary>
    public static IEnumerable<Document> ReadPart(IReadOnlyList<(string Path, CorpusFormat Format)> files, string textField,
        int rank, int world, Action<string>? warn = null, Action<long>? progress = null)
    {
        var sizes = files.Select(f => new FileInfo(f.Path).Length).ToArray();
        long total = sizes.Sum();
        long lo = PartStart(total, rank, world), hi = PartStart(total, rank + 1, world);
        long offset = 0;
        for (int i = 0; i < files.Count; offset += sizes[i], i++)
        {
            var (path, format) = files[i];
            if (format == CorpusFormat.Jsonl)
            {
                long s = Math.Max(lo - offset, 0), e = Math.Min(hi - offset, sizes[i]);
                if (s >= e) continue;
                foreach (var d in ReadJsonlRange(path, textField, s, e, warn, progress)) yield return d;
                continue;
            }
            bool owned = offset >= lo && (offset < hi || (rank == world - 1 && offset == total));
            if (!owned) continue;
            if (format == CorpusFormat.Txt) yield return new Document(ReadText(path, warn));
            else foreach (var d in ParquetCorpus.Read(path, textField)) yield return d;
            progress?.Invoke(sizes[i]);
        }
    }

    /// <summary>Total bytes the ranks before <paramref name="rank"/> own: ⌊total·rank/world⌋.</summary>
    public static long PartStart(long total, int rank, int world) => (long)((UInt128)(ulong)total * (ulong)rank / (ulong)world);

    static string ReadText(string path, Action<string>? warn)
    {
        byte[] bytes;
        try { bytes = File.ReadAllBytes(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new BadInputException($"input {path} cannot be read ({e.Message})");
        }
        var utf8 = new Utf8Counting();
        var span = bytes.AsSpan();
        if (span.StartsWith((ReadOnlySpan<byte>)[0xEF, 0xBB, 0xBF])) span = span[3..];
        var text = utf8.Decode(span);
        if (utf8.Count > 0) warn?.Invoke(Utf8Counting.Warning(path, utf8.Count));
        return text;
    }

    /// <summary>One JSON object per line; blank lines are skipped; <paramref name="textField"/> may be a dotted path.</summary>
    public static IEnumerable<Document> ReadJsonl(string path, string textField, Action<string>? warn = null) =>
        ReadJsonlRange(path, textField, 0, long.MaxValue, warn, null);

    /// <summary>
    /// Lines whose first byte lies in [<paramref name="start"/>, <paramref name="end"/>). Errors name the line number
    /// when reading from the file's start, else the byte offset (a rank in the middle of a file cannot know it).
    /// </summary>
    static IEnumerable<Document> ReadJsonlRange(string path, string textField, long start, long end, Action<string>? warn, Action<long>? progress)
    {
        FileStream stream;
        try { stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new BadInputException($"input {path} cannot be read ({e.Message})");
        }
        var utf8 = new Utf8Counting();
        using (stream)
        {
            long pos = start;
            if (start > 0)
            {
                // The record owning byte `start` began earlier unless the byte before it ends a line.
                stream.Position = start - 1;
                int b;
                pos = start - 1;
                while ((b = stream.ReadByte()) >= 0) { pos++; if (b == '\n') break; }
                if (b < 0) yield break;
            }
            else stream.Position = 0;
            long lineNo = 0;
            var line = new byte[4096];
            int lineLen = 0;
            var buf = new byte[1 << 16];
            int len = 0, at = 0;
            long reported = start;
            while (pos < end)
            {
                long lineStart = pos;
                lineLen = 0;
                bool eof = true;
                while (true)
                {
                    if (at == len) { len = stream.Read(buf, 0, buf.Length); at = 0; if (len == 0) break; }
                    int nl = Array.IndexOf(buf, (byte)'\n', at, len - at);
                    int stop = nl < 0 ? len : nl;
                    if (lineLen + stop - at > line.Length) Array.Resize(ref line, Math.Max(line.Length * 2, lineLen + stop - at));
                    Array.Copy(buf, at, line, lineLen, stop - at);
                    lineLen += stop - at;
                    pos += stop - at;
                    at = stop;
                    if (nl >= 0) { at++; pos++; eof = false; break; }
                }
                if (eof && lineLen == 0) break;
                lineNo++;
                if (progress is not null && pos - reported >= 1 << 20) { progress(Math.Min(pos, end) - reported); reported = Math.Min(pos, end); }
                var bytes = line.AsSpan(0, lineLen);
                if (lineStart == 0 && bytes.StartsWith((ReadOnlySpan<byte>)[0xEF, 0xBB, 0xBF])) bytes = bytes[3..];
                if (bytes.Length > 0 && bytes[^1] == '\r') bytes = bytes[..^1];
                var text = utf8.Decode(bytes);
                if (string.IsNullOrWhiteSpace(text)) continue;
                yield return ParseLine(path, start == 0 ? $"{lineNo}" : $"byte {lineStart}", text, textField);
                if (eof) break;
            }
            if (progress is not null && Math.Min(pos, end) > reported) progress(Math.Min(pos, end) - reported);
            if (utf8.Count > 0) warn?.Invoke(Utf8Counting.Warning(start == 0 ? path : $"{path} (bytes {start}..{Math.Min(end, pos)})", utf8.Count));
        }
    }

    static Document ParseLine(string path, string lineNo, string line, string textField)
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
