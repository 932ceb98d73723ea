using System.Text.Json;

namespace Supercluster.Server.OpenAi;

/// <summary>
/// Reads an OpenAI request body with type checks: a known field of the wrong type is a 400 naming it. Every field read
/// is remembered, so <see cref="RejectUnread"/> can refuse fields the endpoint does not implement (OpenAI answers
/// "Unrecognized request argument"; silently dropping e.g. <c>logprobs</c> would return a different thing than asked).
/// </summary>
public sealed class RequestReader
{
    readonly JsonElement _root;
    readonly HashSet<string> _read = new(StringComparer.Ordinal);

    RequestReader(JsonElement root) => _root = root;

    public JsonElement Root => _root;

    /// <summary>Where the guard leaves the body it parsed (so the endpoint does not read the stream again).</summary>
    internal const string ParsedBodyKey = "supercluster.body";

    public static async Task<(RequestReader Reader, JsonDocument Doc)> ReadAsync(HttpRequest request, CancellationToken ct)
    {
        JsonDocument doc;
        if (request.HttpContext.Items.Remove(ParsedBodyKey, out var parsed) && parsed is JsonDocument d) doc = d;
        else doc = await ParseBodyAsync(request, ct);
        return (new RequestReader(doc.RootElement), doc);
    }

    /// <summary>
    /// The whole body as a JSON object: only <c>application/json</c> (a text/plain or form body is what a cross-site
    /// page can send without a CORS preflight), valid UTF-8, no lone surrogates in any string or name. 415/400 otherwise.
    /// </summary>
    public static async Task<JsonDocument> ParseBodyAsync(HttpRequest request, CancellationToken ct)
    {
        if (!IsJson(request.ContentType))
            throw new ApiException(415, request.ContentType is { Length: > 0 } c
                ? $"unsupported content type '{Clip(c)}': send 'Content-Type: application/json'"
                : "missing content type: send 'Content-Type: application/json'", code: "unsupported_media_type");
        using var buffer = new MemoryStream();
        await request.Body.CopyToAsync(buffer, ct);   // Kestrel stops it at MaxRequestBodySize (413)
        var bytes = buffer.GetBuffer().AsMemory(0, (int)buffer.Length);
        if (!System.Text.Unicode.Utf8.IsValid(bytes.Span))
            throw ApiException.BadRequest("the request body is not valid UTF-8", code: "invalid_encoding");
        JsonDocument doc;
        try { doc = JsonDocument.Parse(bytes.ToArray(), new JsonDocumentOptions { MaxDepth = 32 }); }
        catch (JsonException e) { throw ApiException.BadRequest($"malformed JSON body: {e.Message.Split(" Path:")[0].Split(" LineNumber:")[0]}", code: "invalid_json"); }
        try
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw ApiException.BadRequest("the request body must be a JSON object", code: "invalid_json");
            CheckStrings(doc.RootElement, "");
            return doc;
        }
        catch { doc.Dispose(); throw; }
    }

    static bool IsJson(string? contentType) =>
        Microsoft.Net.Http.Headers.MediaTypeHeaderValue.TryParse(contentType, out var m)
        && (m.MediaType.Equals("application/json", StringComparison.OrdinalIgnoreCase)
            || (m.SubType.EndsWith("+json", StringComparison.OrdinalIgnoreCase) && m.Type.Equals("application", StringComparison.OrdinalIgnoreCase)));

    static string Clip(string s) => s.Length > 80 ? s[..80] + "…" : s;

    /// <summary>A "\ud800" escape is valid JSON but no Unicode text: refuse it here, not as a 500 deep in a tokenizer.</summary>
    static void CheckStrings(JsonElement e, string where)
    {
        switch (e.ValueKind)
        {
            case JsonValueKind.String:
                try { e.GetString(); }
                catch (InvalidOperationException) { throw BadText(where); }
                break;
            case JsonValueKind.Array:
                int i = 0;
                foreach (var x in e.EnumerateArray()) CheckStrings(x, $"{where}[{i++}]");
                break;
            case JsonValueKind.Object:
                foreach (var p in e.EnumerateObject())
                {
                    string name;
                    try { name = p.Name; }
                    catch (InvalidOperationException) { throw BadText(where.Length == 0 ? "(a field name)" : where); }
                    CheckStrings(p.Value, where.Length == 0 ? name : $"{where}.{name}");
                }
                break;
        }
    }

    static ApiException BadText(string where) =>
        ApiException.BadRequest($"'{Clip(where)}' holds an invalid string (a lone UTF-16 surrogate escape such as \\ud800)", Clip(where), "invalid_encoding");

    /// <summary>
    /// 400 for every field of the body that the endpoint did not read, unless it has a value that asks for nothing
    /// (null, false, 0, an empty object/array, or one of <paramref name="ignored"/>, e.g. "user").
    /// </summary>
    public void RejectUnread(params string[] ignored)
    {
        foreach (var p in _root.EnumerateObject())
        {
            if (_read.Contains(p.Name) || ignored.Contains(p.Name) || Neutral(p.Name, p.Value)) continue;
            throw ApiException.BadRequest($"unsupported field '{Clip(p.Name)}': this server does not implement it (remove it or set it to its default)", Clip(p.Name), "unsupported_parameter");
        }
    }

    static bool Neutral(string name, JsonElement v) => v.ValueKind switch
    {
        JsonValueKind.Null or JsonValueKind.False => true,
        JsonValueKind.Number => v.TryGetDouble(out var d) && (d == 0 || (d == 1 && name == "best_of")),
        JsonValueKind.Object => !v.EnumerateObject().Any(),
        JsonValueKind.Array => v.GetArrayLength() == 0,
        _ => false,
    };

    public bool Has(string name) => Get(name) is not null;

    public JsonElement? Get(string name)
    {
        _read.Add(name);
        return _root.TryGetProperty(name, out var v) && v.ValueKind != JsonValueKind.Null ? v : null;
    }

    static ApiException Wrong(string name, string expected, JsonElement v) =>
        ApiException.BadRequest($"'{name}' must be {expected}, got {Describe(v)}", name, "invalid_type");

    static string Describe(JsonElement v) => v.ValueKind switch
    {
        JsonValueKind.String => "a string",
        JsonValueKind.Number => $"the number {v.GetRawText()}",
        JsonValueKind.True or JsonValueKind.False => "a boolean",
        JsonValueKind.Array => "an array",
        JsonValueKind.Object => "an object",
        _ => v.ValueKind.ToString().ToLowerInvariant(),
    };

    public string? String(string name)
    {
        if (Get(name) is not { } v) return null;
        return v.ValueKind == JsonValueKind.String ? v.GetString() : throw Wrong(name, "a string", v);
    }

    public bool? Bool(string name)
    {
        if (Get(name) is not { } v) return null;
        return v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean() : throw Wrong(name, "a boolean", v);
    }

    public double? Number(string name, double min, double max)
    {
        if (Get(name) is not { } v) return null;
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetDouble(out var d)) throw Wrong(name, "a number", v);
        if (d < min || d > max) throw ApiException.BadRequest($"'{name}' = {d} is out of range [{min}, {max}]", name, "out_of_range");
        return d;
    }

    public long? Integer(string name, long min, long max)
    {
        if (Get(name) is not { } v) return null;
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt64(out var i)) throw Wrong(name, "an integer", v);
        if (i < min || i > max) throw ApiException.BadRequest($"'{name}' = {i} is out of range [{min}, {max}]", name, "out_of_range");
        return i;
    }

    /// <summary>A string or an array of strings (OpenAI's <c>stop</c>, <c>prompt</c>, <c>input</c>).</summary>
    public List<string>? Strings(string name, int maxCount)
    {
        if (Get(name) is not { } v) return null;
        if (v.ValueKind == JsonValueKind.String) return [v.GetString()!];
        if (v.ValueKind != JsonValueKind.Array) throw Wrong(name, "a string or an array of strings", v);
        var list = new List<string>();
        foreach (var e in v.EnumerateArray())
        {
            if (e.ValueKind != JsonValueKind.String) throw Wrong(name, "a string or an array of strings", e);
            list.Add(e.GetString()!);
        }
        if (list.Count > maxCount) throw ApiException.BadRequest($"'{name}' has {list.Count} entries, at most {maxCount} allowed", name);
        return list;
    }
}
