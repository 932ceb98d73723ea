using System.Text;
using System.Text.Json.Nodes;
using Supercluster.Search;
using Supercluster.Inference;
using Supercluster.Server.OpenAi;

namespace Supercluster.Server.Search;

/// <summary>
/// <c>POST /v1/search</c> (keyword, semantic or hybrid search with filters; the JSON of <see cref="SearchResponse.ToJson"/>)
/// and <c>POST /v1/answers</c> (a chat completion grounded in the top passages, returning the cited document ids).
/// </summary>
public static class SearchEndpoints
{
    public static void Map(WebApplication app, ServerState s)
    {
        app.MapPost("/v1/search", ctx => Search(ctx, s));
        app.MapPost("/v1/answers", ctx => Answer(ctx, s));
    }

    static (SearchIndex Index, LoadedModel Model, EmbeddingModel Embedding) Require(ServerState s)
    {
        var m = s.RequireModel();
        if (s.Index is null) throw new ApiException(404, "no index loaded: start the server with --index INDEX", code: "no_index");
        return (s.Index, m, s.Embedding!);
    }

    /// <summary>
    /// Body: <c>query</c> (required), <c>mode</c> (keyword | semantic | hybrid, default hybrid), <c>top_k</c> (1–1000,
    /// default 5), <c>filters</c> (<see cref="SearchFilters.ParseJson"/>), <c>weights</c> {keyword, semantic},
    /// <c>rrf_k</c>, <c>candidates</c>.
    /// </summary>
    static SearchRequest ReadRequest(RequestReader r, string queryField, int defaultTopK)
    {
        var query = r.String(queryField) ?? throw ApiException.BadRequest($"'{queryField}' is required", queryField, "missing_required_parameter");
        if (query.Trim().Length == 0) throw ApiException.BadRequest($"'{queryField}' is empty", queryField);
        SearchMode mode;
        try { mode = SearchRequest.ParseMode(r.String("mode") ?? "hybrid"); }
        catch (BadInputException e) { throw ApiException.BadRequest(e.Message, "mode"); }
        IReadOnlyList<FieldFilter> filters = [];
        if (r.Get("filters") is { } f)
        {
            try { filters = SearchFilters.ParseJson(f); }
            catch (BadInputException e) { throw ApiException.BadRequest(e.Message, "filters"); }
        }
        double kw = 1, sw = SearchRequest.DefaultSemanticWeight;
        if (r.Get("weights") is { } w)
        {
            if (w.ValueKind != System.Text.Json.JsonValueKind.Object) throw ApiException.BadRequest("'weights' must be an object {keyword, semantic}", "weights", "invalid_type");
            foreach (var p in w.EnumerateObject())
            {
                if (p.Value.ValueKind != System.Text.Json.JsonValueKind.Number || !p.Value.TryGetDouble(out var x) || x < 0 || x > 1e6)
                    throw ApiException.BadRequest($"'weights.{p.Name}' must be a number in [0, 1e6]", "weights");
                if (p.Name == "keyword") kw = x;
                else if (p.Name == "semantic") sw = x;
                else throw ApiException.BadRequest($"'weights.{p.Name}': unknown mode, expected keyword or semantic", "weights");
            }
            if (kw + sw <= 0) throw ApiException.BadRequest("'weights' are both 0", "weights");
        }
        return new SearchRequest(query, mode, (int)(r.Integer("top_k", 1, SearchRequest.MaxTopK) ?? defaultTopK))
        {
            Filters = filters, KeywordWeight = kw, SemanticWeight = sw,
            RrfK = (int)(r.Integer("rrf_k", 1, 100_000) ?? SearchRequest.DefaultRrfK),
            Candidates = (int)(r.Integer("candidates", 1, 10_000) ?? SearchRequest.DefaultCandidates),
        };
    }

    static async Task<SearchResponse> RunAsync(ServerState s, SearchRequest request, CancellationToken ct)
    {
        var (index, _, embedding) = Require(s);
        // Filters are checked against the index (unknown field, malformed bound): the user's mistake, a 400 on 'filters'.
        try { SearchFilters.ToQuery(request.Filters, index.Manifest.Fields); }
        catch (BadInputException e) { throw ApiException.BadRequest(e.Message, "filters"); }
        return await Task.Run(() => index.Search(request, embedding), ct);
    }

    public static async Task Search(HttpContext ctx, ServerState s)
    {
        var (_, m, _) = Require(s);
        var (r, doc) = await RequestReader.ReadAsync(ctx.Request, ctx.RequestAborted);
        using var _d = doc;
        var request = ReadRequest(r, "query", 5);
        CompletionEndpoints.CheckModel(r, m);
        r.RejectUnread();
        var response = await RunAsync(s, request, ctx.RequestAborted);
        var json = response.ToJson();
        json["model"] = m.Name;
        await CompletionEndpoints.Json(ctx, json);
    }

    /// <summary>
    /// Body: <c>question</c> plus the search fields above (<c>top_k</c> defaults to 3) and the sampling fields of a chat
    /// completion (<c>max_tokens</c>, <c>temperature</c>, …). The passages go into a system message as
    /// <c>[n] (id ID) text</c>, as many as fit the context beside the question and <c>max_tokens</c>; the answer is a
    /// <c>chat.completion</c> with <c>citations</c>: the passages given to the model (id, index, score), in order.
    /// </summary>
    public static async Task Answer(HttpContext ctx, ServerState s)
    {
        var (_, m, _) = Require(s);
        var (r, doc) = await RequestReader.ReadAsync(ctx.Request, ctx.RequestAborted);
        using var _d = doc;
        var request = ReadRequest(r, "question", 3);
        var found = await RunAsync(s, request, ctx.RequestAborted);
        int maxTokens = (int)(r.Integer("max_tokens", 0, int.MaxValue) ?? 16);
        var cited = new List<RankedPassage>();
        int[] ids = Prompt(m, request.Query, cited);
        foreach (var hit in found.Hits)
        {
            var trial = Prompt(m, request.Query, [.. cited, hit]);
            int over = trial.Length + maxTokens - m.Context;
            if (over > 0)
            {
                // The last passage that fits in part is cut to the room left (at least 8 tokens of it), then no more.
                var tokens = m.Tokenizer.Encode(hit.Passage.Text);
                if (tokens.Length - over < 8) break;
                var cut = hit with { Passage = hit.Passage with { Text = m.Tokenizer.Decode(tokens.AsSpan(0, tokens.Length - over)) } };
                trial = Prompt(m, request.Query, [.. cited, cut]);
                if (trial.Length + maxTokens > m.Context) break;
                cited.Add(cut); ids = trial;
                break;
            }
            cited.Add(hit);
            ids = trial;
        }
        var p = Generation.Parse(r, ids.Length, m, s.Options, ChatTemplate.Stops);
        if (p.Stream) throw ApiException.BadRequest("'stream' is not supported by /v1/answers", "stream");
        CompletionEndpoints.CheckModel(r, m);
        r.RejectUnread("user");
        var all = await CompletionEndpoints.RunAll(s, m, [ids], p, null, null, ctx.RequestAborted);
        await CompletionEndpoints.Json(ctx, new JsonObject
        {
            ["id"] = "chatcmpl-" + Guid.NewGuid().ToString("N")[..24], ["object"] = "chat.completion",
            ["created"] = DateTimeOffset.UtcNow.ToUnixTimeSeconds(), ["model"] = m.Name,
            ["choices"] = new JsonArray(all.Select(c => (JsonNode)new JsonObject
            {
                ["index"] = c.Index, ["message"] = new JsonObject { ["role"] = "assistant", ["content"] = c.Text.Trim() },
                ["logprobs"] = null, ["finish_reason"] = c.FinishReason,
            }).ToArray()),
            ["citations"] = new JsonArray(cited.Select((h, i) => (JsonNode)new JsonObject
            {
                ["n"] = i + 1, ["id"] = h.DocId, ["index"] = h.Row, ["score"] = Math.Round(h.Score, 6),
            }).ToArray()),
            ["usage"] = new JsonObject { ["prompt_tokens"] = ids.Length, ["completion_tokens"] = all.Sum(c => c.CompletionTokens), ["total_tokens"] = ids.Length + all.Sum(c => c.CompletionTokens) },
        });
    }

    /// <summary>The chat prompt: a system message with the numbered passages <c>[n] (id ID) text</c>, then the question.</summary>
    static int[] Prompt(LoadedModel m, string question, IReadOnlyList<RankedPassage> passages)
    {
        var system = new StringBuilder();
        for (int i = 0; i < passages.Count; i++) system.Append($"[{i + 1}] (id {passages[i].DocId}) {passages[i].Passage.Text.ReplaceLineEndings(" ")}\n");
        (string, string)[] messages = passages.Count == 0 ? [("user", question)] : [("system", system.ToString()), ("user", question)];
        var ids = m.Tokenizer.Encode(ChatTemplate.Render(messages));
        if (passages.Count == 0 && ids.Length > m.Context)
            throw ApiException.BadRequest($"this model's context is {m.Context} tokens, the question alone makes a prompt of {ids.Length}", "question", "context_length_exceeded");
        return ids;
    }
}
