using System.Text.Json;

namespace Supercluster.Server.OpenAi;

/// <summary>Reads an OpenAI request body with type checks: a known field of the wrong type is a 400 naming it; unknown fields are ignored.</summary>
public sealed class RequestReader
{
    readonly JsonElement _root;

    RequestReader(JsonElement root) => _root = root;

    public JsonElement Root => _root;

    public static async Task<(RequestReader Reader, JsonDocument Doc)> ReadAsync(HttpRequest request, CancellationToken ct)
    {
        if (request.ContentType is { } ctype && !ctype.StartsWith("application/json", StringComparison.OrdinalIgnoreCase) && !ctype.StartsWith("text/plain", StringComparison.OrdinalIgnoreCase))
            throw new ApiException(415, $"unsupported content type '{ctype}': send application/json");
        JsonDocument doc;
        try { doc = await JsonDocument.ParseAsync(request.Body, new JsonDocumentOptions { MaxDepth = 32 }, ct); }
        catch (JsonException e) { throw ApiException.BadRequest($"malformed JSON body: {e.Message.Split(" Path:")[0]}", code: "invalid_json"); }
        if (doc.RootElement.ValueKind != JsonValueKind.Object)
        {
            doc.Dispose();
            throw ApiException.BadRequest("the request body must be a JSON object", code: "invalid_json");
        }
        return (new RequestReader(doc.RootElement), doc);
    }

    public bool Has(string name) => _root.TryGetProperty(name, out var v) && v.ValueKind != JsonValueKind.Null;

    public JsonElement? Get(string name) => _root.TryGetProperty(name, out var v) && v.ValueKind != JsonValueKind.Null ? v : null;

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
