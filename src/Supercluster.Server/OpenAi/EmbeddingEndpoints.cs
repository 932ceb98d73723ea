using System.Text.Json;
using System.Text.Json.Nodes;

namespace Supercluster.Server.OpenAi;

/// <summary><c>POST /v1/embeddings</c>, <c>GET /v1/models</c> (search: <see cref="Search.SearchEndpoints"/>).</summary>
public static class EmbeddingEndpoints
{
    public const int MaxInputs = 256;

    public static async Task Embeddings(HttpContext ctx, ServerState s)
    {
        var m = s.RequireModel();
        var (r, doc) = await RequestReader.ReadAsync(ctx.Request, ctx.RequestAborted);
        using var _ = doc;
        CompletionEndpoints.CheckModel(r, m);
        var format = r.String("encoding_format") ?? "float";
        if (format is not ("float" or "base64")) throw ApiException.BadRequest($"'encoding_format' = '{format}': expected float or base64", "encoding_format");
        if (r.Get("input") is not { } input) throw ApiException.BadRequest("'input' is required", "input", "missing_required_parameter");
        var inputs = Inputs(input, m);
        r.RejectUnread("user");
        int tokens = inputs.Sum(x => x.Length);
        var vectors = await Task.Run(() => m.Embedder.Embed(inputs), ctx.RequestAborted);
        var data = new JsonArray();
        for (int i = 0; i < vectors.Length; i++)
        {
            JsonNode emb = format == "base64"
                ? Convert.ToBase64String(System.Runtime.InteropServices.MemoryMarshal.AsBytes(vectors[i].AsSpan()))
                : new JsonArray(vectors[i].Select(f => (JsonNode)f).ToArray());
            data.Add(new JsonObject { ["object"] = "embedding", ["index"] = i, ["embedding"] = emb });
        }
        await CompletionEndpoints.Json(ctx, new JsonObject
        {
            ["object"] = "list", ["data"] = data, ["model"] = m.Name,
            ["usage"] = new JsonObject { ["prompt_tokens"] = tokens, ["total_tokens"] = tokens },
        });
    }

    /// <summary>input: a string, an array of strings, an array of token ids, or an array of token-id arrays.</summary>
    static List<int[]> Inputs(JsonElement v, LoadedModel m)
    {
        ApiException Wrong() => ApiException.BadRequest("'input' must be a string, an array of strings, or (arrays of) token ids", "input", "invalid_type");
        int[] Text(string s)
        {
            if (s.Length == 0) throw ApiException.BadRequest("'input' contains an empty string", "input");
            return m.Tokenizer.Encode(s);
        }
        int[] Ids(JsonElement arr)
        {
            var ids = new List<int>();
            foreach (var e in arr.EnumerateArray())
            {
                if (e.ValueKind != JsonValueKind.Number || !e.TryGetInt32(out var t)) throw Wrong();
                if (t < 0 || t >= m.Model.Config.VocabSize) throw ApiException.BadRequest($"token id {t} is outside the vocabulary", "input", "invalid_token");
                ids.Add(t);
            }
            if (ids.Count == 0) throw ApiException.BadRequest("'input' contains an empty token list", "input");
            return ids.ToArray();
        }
        var list = new List<int[]>();
        if (v.ValueKind == JsonValueKind.String) list.Add(Text(v.GetString()!));
        else if (v.ValueKind != JsonValueKind.Array || v.GetArrayLength() == 0) throw Wrong();
        else if (v[0].ValueKind == JsonValueKind.Number) list.Add(Ids(v));
        else
            foreach (var e in v.EnumerateArray())
                list.Add(e.ValueKind switch { JsonValueKind.String => Text(e.GetString()!), JsonValueKind.Array => Ids(e), _ => throw Wrong() });
        if (list.Count > MaxInputs) throw ApiException.BadRequest($"at most {MaxInputs} inputs per request, got {list.Count}", "input");
        // Longer inputs are cut to the context (documented); say so only by the token count in usage.
        return list.Select(x => x.Length > m.Context ? x[..m.Context] : x).ToList();
    }

    public static Task Models(HttpContext ctx, ServerState s)
    {
        var data = new JsonArray();
        foreach (var m in s.Model is { } b ? s.Adapters.Prepend(b) : [])
            data.Add(new JsonObject
            {
                ["id"] = m.Name, ["object"] = "model", ["created"] = new DateTimeOffset(Directory.GetCreationTimeUtc(m.Dir)).ToUnixTimeSeconds(),
                ["owned_by"] = "supercluster", ["context_length"] = m.Context, ["family"] = m.Model.Config.Family.ToString().ToLowerInvariant(),
                ["parameters"] = m.Model.Config.ParameterCount(), ["tokenizer"] = m.Tokenizer.Name,
                ["parent"] = ReferenceEquals(m, s.Model) ? null : s.Model!.Name,   // an adapter names its base, as vLLM's LoRA modules do
            });
        return CompletionEndpoints.Json(ctx, new JsonObject { ["object"] = "list", ["data"] = data });
    }
}
