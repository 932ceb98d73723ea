using System.Text.Json;
using System.Text.Json.Nodes;
using Supercluster.Inference;

namespace Supercluster.Server.OpenAi;

/// <summary><c>POST /v1/completions</c> and <c>POST /v1/chat/completions</c> in OpenAI's request/response shapes, streamed as SSE on request.</summary>
public static class CompletionEndpoints
{
    public static async Task Completions(HttpContext ctx, ServerState s)
    {
        var m = s.RequireModel();
        var (r, doc) = await RequestReader.ReadAsync(ctx.Request, ctx.RequestAborted);
        using var _ = doc;
        m = s.ModelFor(r, m);   // the base or a LoRA adapter by name
        if (!r.Has("prompt")) throw ApiException.BadRequest("'prompt' is required", "prompt", "missing_required_parameter");
        var prompts = PromptTokens(r, m);
        var p = Generation.Parse(r, prompts.Max(x => x.Length), m, s.Options, []);
        if (r.Bool("echo") == true) throw ApiException.BadRequest("'echo' is not supported", "echo");
        r.RejectUnread("user");
        CheckFits(prompts.Count * p.N, m);
        string id = "cmpl-" + Guid.NewGuid().ToString("N")[..24];
        long created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        JsonObject Chunk(int index, string text, string? finish) => new()
        {
            ["id"] = id, ["object"] = "text_completion", ["created"] = created, ["model"] = m.Name,
            ["choices"] = new JsonArray(new JsonObject { ["text"] = text, ["index"] = index, ["logprobs"] = null, ["finish_reason"] = finish }),
        };
        if (p.Stream)
        {
            Sse? sse = null;
            // Admitted (or refused with 429) before the SSE headers go out; then the 200 is true.
            var results = await RunAll(s, m, prompts, p, async () => sse = await Sse.StartAsync(ctx), (i, t) => sse!.SendAsync(Chunk(i, t, null)), ctx.RequestAborted);
            foreach (var c in results) await sse!.SendAsync(Chunk(c.Index, "", c.FinishReason));
            await sse!.DoneAsync();
            return;
        }
        var all = await RunAll(s, m, prompts, p, null, null, ctx.RequestAborted);
        var choices = new JsonArray(all.Select(c => (JsonNode)new JsonObject
        {
            ["text"] = c.Text, ["index"] = c.Index, ["logprobs"] = null, ["finish_reason"] = c.FinishReason,
        }).ToArray());
        int promptTokens = prompts.Sum(x => x.Length) * p.N, completion = all.Sum(c => c.CompletionTokens);
        await Json(ctx, new JsonObject
        {
            ["id"] = id, ["object"] = "text_completion", ["created"] = created, ["model"] = m.Name, ["choices"] = choices,
            ["usage"] = Usage(prompts.Sum(x => x.Length), completion),
        });
    }

    public static async Task Chat(HttpContext ctx, ServerState s)
    {
        var m = s.RequireModel();
        var (r, doc) = await RequestReader.ReadAsync(ctx.Request, ctx.RequestAborted);
        using var _ = doc;
        m = s.ModelFor(r, m);   // the base or a LoRA adapter by name
        var messages = Messages(r);
        var ids = Encode(m, ChatTemplate.Render(messages));
        var p = Generation.Parse(r, ids.Length, m, s.Options, ChatTemplate.Stops);
        r.RejectUnread("user");
        CheckFits(p.N, m);
        string id = "chatcmpl-" + Guid.NewGuid().ToString("N")[..24];
        long created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        JsonObject Chunk(int index, JsonObject delta, string? finish) => new()
        {
            ["id"] = id, ["object"] = "chat.completion.chunk", ["created"] = created, ["model"] = m.Name,
            ["choices"] = new JsonArray(new JsonObject { ["index"] = index, ["delta"] = delta, ["logprobs"] = null, ["finish_reason"] = finish }),
        };
        if (p.Stream)
        {
            Sse? sse = null;
            async Task Start()
            {
                sse = await Sse.StartAsync(ctx);
                for (int i = 0; i < p.N; i++) await sse.SendAsync(Chunk(i, new JsonObject { ["role"] = "assistant", ["content"] = "" }, null));
            }
            var results = await RunAll(s, m, [ids], p, Start, (i, t) => sse!.SendAsync(Chunk(i, new JsonObject { ["content"] = t }, null)), ctx.RequestAborted);
            foreach (var c in results) await sse!.SendAsync(Chunk(c.Index, new JsonObject(), c.FinishReason));
            await sse!.DoneAsync();
            return;
        }
        var all = await RunAll(s, m, [ids], p, null, null, ctx.RequestAborted);
        await Json(ctx, new JsonObject
        {
            ["id"] = id, ["object"] = "chat.completion", ["created"] = created, ["model"] = m.Name,
            ["choices"] = new JsonArray(all.Select(c => (JsonNode)new JsonObject
            {
                ["index"] = c.Index,
                ["message"] = new JsonObject { ["role"] = "assistant", ["content"] = c.Text.Trim() },
                ["logprobs"] = null,
                ["finish_reason"] = c.FinishReason,
            }).ToArray()),
            ["usage"] = Usage(ids.Length, all.Sum(c => c.CompletionTokens)),
        });
    }

    /// <summary>
    /// Submits every prompt's choices (all or none: a refusal cancels those already queued), then calls
    /// <paramref name="admitted"/> (streams send their headers there), then collects the results.
    /// </summary>
    internal static async Task<ChoiceResult[]> RunAll(ServerState s, LoadedModel m, List<int[]> prompts, GenerationParams p,
        Func<Task>? admitted, Func<int, string, Task>? onDelta, CancellationToken ct)
    {
        var gate = new SemaphoreSlim(1);
        Func<int, string, Task>? Delta(int offset) => onDelta is null ? null : async (i, t) =>
        {
            await gate.WaitAsync();
            try { await onDelta(offset + i, t); } finally { gate.Release(); }
        };
        var runs = new List<Generation.Run>();
        try
        {
            foreach (var ids in prompts) runs.Add(Generation.Submit(m, ids, p, s.Options.GenerationTimeLimit, ct));
            if (admitted is not null) await admitted();
        }
        catch
        {
            foreach (var run in runs) run.Dispose();
            throw;
        }
        var tasks = runs.Select((run, k) => Generation.CollectAsync(run, m, p, Delta(k * p.N))).ToArray();
        var results = (await Task.WhenAll(tasks)).SelectMany((rs, k) => rs.Select(c => c with { Index = k * p.N + c.Index })).ToArray();
        s.Metrics.Generated(results.Sum(c => c.CompletionTokens), prompts.Sum(x => x.Length));
        return results;
    }

    /// <summary><c>model</c> is optional; when given it must name the loaded model (404 model_not_found, as OpenAI and vLLM).</summary>
    internal static void CheckModel(RequestReader r, LoadedModel m)
    {
        if (r.String("model") is { } name && !m.Aliases.Contains(name))
            throw new ApiException(404, $"the model '{(name.Length > 100 ? name[..100] + "…" : name)}' does not exist; this server serves '{m.Name}'", param: "model", code: "model_not_found");
    }

    /// <summary>More sequences than the queue holds can never be admitted: 400, not a 429 that retrying cannot cure.</summary>
    static void CheckFits(int sequences, LoadedModel m)
    {
        if (sequences > m.Scheduler.MaxQueue)
            throw ApiException.BadRequest($"this request needs {sequences} sequences (prompts × n), more than the server's queue of {m.Scheduler.MaxQueue} (--max-queue) can ever hold", "n");
    }

    static JsonObject Usage(int prompt, int completion) => new()
    {
        ["prompt_tokens"] = prompt, ["completion_tokens"] = completion, ["total_tokens"] = prompt + completion,
    };

    static int[] Encode(LoadedModel m, string text)
    {
        var ids = text.Length == 0 ? [m.Tokenizer.EotToken] : m.Tokenizer.Encode(text);
        if (ids.Length > m.Context)
            throw ApiException.BadRequest($"this model's context is {m.Context} tokens, the prompt has {ids.Length}", "prompt", "context_length_exceeded");
        return ids;
    }

    /// <summary>prompt: a string, an array of strings, an array of token ids, or an array of such arrays.</summary>
    static List<int[]> PromptTokens(RequestReader r, LoadedModel m)
    {
        var v = r.Get("prompt")!.Value;
        ApiException Wrong() => ApiException.BadRequest("'prompt' must be a string, an array of strings, or an array of token ids", "prompt", "invalid_type");
        int[] Tokens(JsonElement arr)
        {
            var ids = new List<int>();
            foreach (var e in arr.EnumerateArray())
            {
                if (e.ValueKind != JsonValueKind.Number || !e.TryGetInt32(out var t)) throw Wrong();
                if (t < 0 || t >= m.Tokenizer.VocabSize || t >= m.Model.Config.VocabSize)
                    throw ApiException.BadRequest($"token id {t} is outside the vocabulary", "prompt", "invalid_token");
                ids.Add(t);
            }
            if (ids.Count == 0) ids.Add(m.Tokenizer.EotToken);
            if (ids.Count > m.Context)
                throw ApiException.BadRequest($"this model's context is {m.Context} tokens, the prompt has {ids.Count}", "prompt", "context_length_exceeded");
            return ids.ToArray();
        }
        List<int[]> result;
        if (v.ValueKind == JsonValueKind.String) result = [Encode(m, v.GetString()!)];
        else if (v.ValueKind != JsonValueKind.Array) throw Wrong();
        else if (v.GetArrayLength() == 0) throw ApiException.BadRequest("'prompt' is empty", "prompt");
        else if (v[0].ValueKind == JsonValueKind.Number) result = [Tokens(v)];
        else
        {
            result = [];
            foreach (var e in v.EnumerateArray())
                result.Add(e.ValueKind switch
                {
                    JsonValueKind.String => Encode(m, e.GetString()!),
                    JsonValueKind.Array => Tokens(e),
                    _ => throw Wrong(),
                });
        }
        if (result.Count > 8) throw ApiException.BadRequest($"at most 8 prompts per request, got {result.Count}", "prompt");
        return result;
    }

    static List<(string Role, string Content)> Messages(RequestReader r)
    {
        if (r.Get("messages") is not { } v) throw ApiException.BadRequest("'messages' is required", "messages", "missing_required_parameter");
        if (v.ValueKind != JsonValueKind.Array || v.GetArrayLength() == 0)
            throw ApiException.BadRequest("'messages' must be a non-empty array of {role, content} objects", "messages", "invalid_type");
        var list = new List<(string, string)>();
        int i = 0;
        foreach (var e in v.EnumerateArray())
        {
            string where = $"messages[{i++}]";
            if (e.ValueKind != JsonValueKind.Object) throw ApiException.BadRequest($"'{where}' must be an object", where, "invalid_type");
            if (!e.TryGetProperty("role", out var role) || role.ValueKind != JsonValueKind.String)
                throw ApiException.BadRequest($"'{where}.role' must be a string", where + ".role", "invalid_type");
            var rs = role.GetString()!;
            if (rs is not ("system" or "user" or "assistant" or "developer"))
                throw ApiException.BadRequest($"'{where}.role' = '{rs}': expected system, developer, user or assistant", where + ".role");
            if (!e.TryGetProperty("content", out var content)) throw ApiException.BadRequest($"'{where}.content' is required", where + ".content");
            string text = content.ValueKind switch
            {
                JsonValueKind.String => content.GetString()!,
                // Content parts: only text parts are understood.
                JsonValueKind.Array => string.Concat(content.EnumerateArray().Select(part =>
                    part.ValueKind == JsonValueKind.Object && part.TryGetProperty("text", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString()
                    : throw ApiException.BadRequest($"'{where}.content' parts must be text parts", where + ".content", "invalid_type"))),
                _ => throw ApiException.BadRequest($"'{where}.content' must be a string", where + ".content", "invalid_type"),
            };
            list.Add((rs == "developer" ? "system" : rs, text));
        }
        return list;
    }

    internal static async Task Json(HttpContext ctx, JsonNode body, int status = 200)
    {
        ctx.Response.StatusCode = status;
        ctx.Response.ContentType = "application/json";
        await ctx.Response.WriteAsync(body.ToJsonString(), ctx.RequestAborted);
    }
}

/// <summary>Server-sent events: <c>data: {json}\n\n</c> per chunk, flushed at once, ending with <c>data: [DONE]</c>.</summary>
public sealed class Sse
{
    readonly HttpContext _ctx;
    Sse(HttpContext ctx) => _ctx = ctx;

    public static async Task<Sse> StartAsync(HttpContext ctx)
    {
        ctx.Response.StatusCode = 200;
        ctx.Response.ContentType = "text/event-stream";
        ctx.Response.Headers.CacheControl = "no-cache";
        ctx.Response.Headers["X-Accel-Buffering"] = "no";
        await ctx.Response.Body.FlushAsync(ctx.RequestAborted);
        return new Sse(ctx);
    }

    public async Task SendAsync(JsonNode chunk)
    {
        await _ctx.Response.WriteAsync("data: " + chunk.ToJsonString() + "\n\n", _ctx.RequestAborted);
        await _ctx.Response.Body.FlushAsync(_ctx.RequestAborted);
    }

    public async Task DoneAsync()
    {
        await _ctx.Response.WriteAsync("data: [DONE]\n\n", _ctx.RequestAborted);
        await _ctx.Response.Body.FlushAsync(_ctx.RequestAborted);
    }
}
