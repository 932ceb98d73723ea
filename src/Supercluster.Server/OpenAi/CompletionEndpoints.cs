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
        p = p with
        {
            TopLogprobs = (int)(r.Integer("logprobs", 0, MaxTopLogprobs) ?? -1),
            Echo = r.Bool("echo") ?? false,
            Grammar = StructuredOutput.Grammar(StructuredOutput.ResponseFormat(r), null, "none", chat: false),
        };
        CheckGrammarFits(p);
        r.RejectUnread("user");
        CheckFits(prompts.Count * p.N, m);
        string id = "cmpl-" + Guid.NewGuid().ToString("N")[..24];
        long created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        // Echo puts the prompt's text (and, with logprobs, its tokens) before each choice's generated text.
        string EchoText(int choice) => p.Echo ? m.Tokenizer.Decode(prompts[choice / p.N]) : "";
        JsonObject Chunk(int index, string text, JsonNode? logprobs, string? finish) => new()
        {
            ["id"] = id, ["object"] = "text_completion", ["created"] = created, ["model"] = m.Name,
            ["choices"] = new JsonArray(new JsonObject { ["text"] = text, ["index"] = index, ["logprobs"] = logprobs, ["finish_reason"] = finish }),
        };
        int promptTokens = prompts.Sum(x => x.Length);
        if (p.Stream)
        {
            Sse? sse = null;
            var started = new HashSet<int>();
            var templates = new Dictionary<int, ChunkTemplate>();
            Task Delta(int i, string t, IReadOnlyList<TokenInfo> lps)
            {
                string head = started.Add(i) ? EchoText(i) : "";
                if (p.TopLogprobs < 0)
                {
                    // Only the text differs between a choice's chunks: the rest is serialised once.
                    if (!templates.TryGetValue(i, out var tpl)) templates[i] = tpl = new ChunkTemplate(Chunk(i, ChunkTemplate.Hole, null, null));
                    sse!.Write(tpl, head + t);
                }
                else sse!.Write(Chunk(i, head + t, CompletionLogprobs(m, lps, head.Length), null));
                return Task.CompletedTask;
            }
            // Admitted (or refused with 429) before the SSE headers go out; then the 200 is true.
            var results = await RunAll(s, m, prompts, p, async () => sse = await Sse.StartAsync(ctx), new DeltaSink(Delta, () => sse!.FlushAsync()), ctx.RequestAborted);
            foreach (var c in results) await sse!.SendAsync(Chunk(c.Index, started.Contains(c.Index) ? "" : EchoText(c.Index), null, c.FinishReason));
            if (p.IncludeUsage) await sse!.SendAsync(UsageChunk(id, "text_completion", created, m.Name, promptTokens, results.Sum(c => c.CompletionTokens)));
            await sse!.DoneAsync();
            return;
        }
        var all = await RunAll(s, m, prompts, p, null, null, ctx.RequestAborted);
        var choices = new JsonArray(all.Select(c =>
        {
            string head = EchoText(c.Index);
            return (JsonNode)new JsonObject
            {
                ["text"] = head + c.Text, ["index"] = c.Index,
                ["logprobs"] = p.TopLogprobs < 0 ? null : CompletionLogprobs(m, c.Logprobs!, head.Length, p.Echo ? prompts[c.Index / p.N] : null, c.PromptLogprobs),
                ["finish_reason"] = c.FinishReason,
            };
        }).ToArray());
        int completion = all.Sum(c => c.CompletionTokens);
        await Json(ctx, new JsonObject
        {
            ["id"] = id, ["object"] = "text_completion", ["created"] = created, ["model"] = m.Name, ["choices"] = choices,
            ["usage"] = Usage(promptTokens, completion),
        });
    }

    /// <summary>Most alternatives per token (vLLM's default max_logprobs; OpenAI allows 5 for completions, 20 for chat).</summary>
    const int MaxTopLogprobs = 20;

    /// <summary>A grammar needs room to close its value; too small a budget is the client's error, not a broken output.</summary>
    static void CheckGrammarFits(GenerationParams p)
    {
        if (p.Grammar is { } g && g.MinLength > p.MaxTokens)
            throw ApiException.BadRequest($"max_tokens = {p.MaxTokens} is too small for the requested format: the shortest valid output takes {g.MinLength} tokens",
                "max_tokens", "max_tokens_too_small");
    }

    static JsonObject UsageChunk(string id, string obj, long created, string model, int prompt, int completion) => new()
    {
        ["id"] = id, ["object"] = obj, ["created"] = created, ["model"] = model, ["choices"] = new JsonArray(), ["usage"] = Usage(prompt, completion),
    };

    /// <summary>A token's text for logprobs: its UTF-8 text, or "bytes:\xNN…" when it holds part of a character (as OpenAI).</summary>
    static string TokenText(LoadedModel m, int token)
    {
        var bytes = m.Tokenizer.TokenBytes(token);
        if (token != m.Tokenizer.EotToken && System.Text.Unicode.Utf8.IsValid(bytes)) return System.Text.Encoding.UTF8.GetString(bytes);
        if (token == m.Tokenizer.EotToken) return m.Tokenizer.Decode([token]);
        return "bytes:" + string.Concat(bytes.Select(b => $"\\x{b:x2}"));
    }

    /// <summary>OpenAI's legacy shape: {tokens, token_logprobs, top_logprobs: [{token: logprob}], text_offset}; with echo the prompt's tokens first (the first has null).</summary>
    static JsonObject CompletionLogprobs(LoadedModel m, IReadOnlyList<TokenInfo> generated, int offsetBase, int[]? prompt = null, IReadOnlyList<TokenLogprob>? promptLps = null)
    {
        var tokens = new JsonArray(); var lps = new JsonArray(); var tops = new JsonArray(); var offsets = new JsonArray();
        JsonObject Top(TokenLogprob lp)
        {
            var o = new JsonObject();
            foreach (var (t, v) in lp.Top) o[TokenText(m, t)] ??= v;   // two tokens with one text: the likelier shows
            return o;
        }
        if (prompt is not null)
        {
            var decoder = new TokenTextDecoder(m.Tokenizer);
            int at = 0;
            for (int i = 0; i < prompt.Length; i++)
            {
                tokens.Add(TokenText(m, prompt[i]));
                var lp = i == 0 || promptLps is null || i - 1 >= promptLps.Count ? null : promptLps[i - 1];
                lps.Add(lp is null ? null : (JsonNode)lp.Logprob);
                tops.Add(lp is null ? null : Top(lp));
                offsets.Add(at);
                at += decoder.Add(prompt[i]).Length;
            }
        }
        foreach (var g in generated)
        {
            tokens.Add(TokenText(m, g.Logprob.Token));
            lps.Add(g.Logprob.Logprob);
            tops.Add(Top(g.Logprob));
            offsets.Add(offsetBase + g.Offset);
        }
        return new JsonObject { ["tokens"] = tokens, ["token_logprobs"] = lps, ["top_logprobs"] = tops, ["text_offset"] = offsets };
    }

    /// <summary>Chat's shape: {content: [{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}]}.</summary>
    static JsonObject ChatLogprobs(LoadedModel m, IEnumerable<TokenInfo> generated)
    {
        JsonObject Entry(int token, float lp) => new()
        {
            ["token"] = TokenText(m, token), ["logprob"] = lp,
            ["bytes"] = new JsonArray(m.Tokenizer.TokenBytes(token).Select(b => (JsonNode)(int)b).ToArray()),
        };
        return new JsonObject
        {
            ["content"] = new JsonArray(generated.Select(g =>
            {
                var e = Entry(g.Logprob.Token, g.Logprob.Logprob);
                e["top_logprobs"] = new JsonArray(g.Logprob.Top.Select(t => (JsonNode)Entry(t.Token, t.Logprob)).ToArray());
                return (JsonNode)e;
            }).ToArray()),
        };
    }

    public static async Task Chat(HttpContext ctx, ServerState s)
    {
        var m = s.RequireModel();
        var (r, doc) = await RequestReader.ReadAsync(ctx.Request, ctx.RequestAborted);
        using var _ = doc;
        m = s.ModelFor(r, m);   // the base or a LoRA adapter by name
        var tools = StructuredOutput.Tools(r);
        var toolChoice = StructuredOutput.ToolChoice(r, tools);
        if (r.Get("parallel_tool_calls") is { } ptc && ptc.ValueKind is not (JsonValueKind.True or JsonValueKind.False))
            throw ApiException.BadRequest("'parallel_tool_calls' must be a boolean", "parallel_tool_calls", "invalid_type");
        var messages = Messages(r);
        if (tools is not null) messages.Insert(0, ChatTemplate.ToolsMessage(tools.Select(t => (t.Name, t.Description, t.Parameters))));
        var ids = Encode(m, ChatTemplate.Render(messages));
        var p = Generation.Parse(r, ids.Length, m, s.Options, ChatTemplate.Stops);
        bool logprobs = r.Bool("logprobs") ?? false;
        var top = r.Integer("top_logprobs", 0, MaxTopLogprobs);
        if (top is not null && !logprobs) throw ApiException.BadRequest("'top_logprobs' needs 'logprobs': true", "top_logprobs");
        p = p with
        {
            TopLogprobs = logprobs ? (int)(top ?? 0) : -1,
            Grammar = StructuredOutput.Grammar(StructuredOutput.ResponseFormat(r), tools, toolChoice, chat: true),
        };
        CheckGrammarFits(p);
        r.RejectUnread("user");
        CheckFits(p.N, m);
        string id = "chatcmpl-" + Guid.NewGuid().ToString("N")[..24];
        long created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        JsonObject Chunk(int index, JsonObject delta, JsonNode? lps, string? finish) => new()
        {
            ["id"] = id, ["object"] = "chat.completion.chunk", ["created"] = created, ["model"] = m.Name,
            ["choices"] = new JsonArray(new JsonObject { ["index"] = index, ["delta"] = delta, ["logprobs"] = lps, ["finish_reason"] = finish }),
        };
        // With tools a reply may turn out to be a call: its text is held back and sent as tool_calls at the end.
        bool holdText = tools is not null && toolChoice != "none";
        if (p.Stream)
        {
            Sse? sse = null;
            async Task Start()
            {
                sse = await Sse.StartAsync(ctx);
                for (int i = 0; i < p.N; i++) await sse.SendAsync(Chunk(i, new JsonObject { ["role"] = "assistant", ["content"] = "" }, null, null));
            }
            var held = new Dictionary<int, (System.Text.StringBuilder Text, List<TokenInfo> Lps)>();
            var plain = new HashSet<int>();
            var templates = new Dictionary<int, ChunkTemplate>();
            Task Delta(int i, string t, IReadOnlyList<TokenInfo> lps)
            {
                if (holdText && !plain.Contains(i))
                {
                    if (!held.TryGetValue(i, out var h)) held[i] = h = (new(), []);
                    h.Text.Append(t); h.Lps.AddRange(lps);
                    var sofar = h.Text.ToString().TrimStart();
                    if (sofar.Length == 0 || ChatTemplate.ToolCallOpen.StartsWith(sofar, StringComparison.Ordinal)
                        || sofar.StartsWith(ChatTemplate.ToolCallOpen, StringComparison.Ordinal)) return Task.CompletedTask;   // may still be a call
                    plain.Add(i); held.Remove(i);
                    t = h.Text.ToString(); lps = h.Lps;
                }
                if (p.TopLogprobs < 0)
                {
                    if (!templates.TryGetValue(i, out var tpl)) templates[i] = tpl = new ChunkTemplate(Chunk(i, new JsonObject { ["content"] = ChunkTemplate.Hole }, null, null));
                    sse!.Write(tpl, t);
                }
                else sse!.Write(Chunk(i, new JsonObject { ["content"] = t }, ChatLogprobs(m, lps), null));
                return Task.CompletedTask;
            }
            var results = await RunAll(s, m, [ids], p, Start, new DeltaSink(Delta, () => sse!.FlushAsync()), ctx.RequestAborted);
            foreach (var c in results)
            {
                string finish = c.FinishReason;
                if (held.TryGetValue(c.Index, out var h))
                {
                    var lps = p.TopLogprobs < 0 ? null : ChatLogprobs(m, h.Lps);
                    if (StructuredOutput.ParseToolCalls(c.Text, tools) is { } calls)
                    {
                        for (int k = 0; k < calls.Count; k++) calls[k]!["index"] = k;
                        await sse!.SendAsync(Chunk(c.Index, new JsonObject { ["tool_calls"] = calls }, lps, null));
                        finish = "tool_calls";
                    }
                    else if (h.Text.Length > 0 || h.Lps.Count > 0)
                        await sse!.SendAsync(Chunk(c.Index, new JsonObject { ["content"] = h.Text.ToString() }, lps, null));
                }
                await sse!.SendAsync(Chunk(c.Index, new JsonObject(), null, finish));
            }
            if (p.IncludeUsage) await sse!.SendAsync(UsageChunk(id, "chat.completion.chunk", created, m.Name, ids.Length, results.Sum(c => c.CompletionTokens)));
            await sse!.DoneAsync();
            return;
        }
        var all = await RunAll(s, m, [ids], p, null, null, ctx.RequestAborted);
        await Json(ctx, new JsonObject
        {
            ["id"] = id, ["object"] = "chat.completion", ["created"] = created, ["model"] = m.Name,
            ["choices"] = new JsonArray(all.Select(c =>
            {
                var calls = StructuredOutput.ParseToolCalls(c.Text, tools);
                return (JsonNode)new JsonObject
                {
                    ["index"] = c.Index,
                    ["message"] = calls is null
                        ? new JsonObject { ["role"] = "assistant", ["content"] = c.Text.Trim() }
                        : new JsonObject { ["role"] = "assistant", ["content"] = null, ["tool_calls"] = calls },
                    ["logprobs"] = p.TopLogprobs < 0 ? null : ChatLogprobs(m, c.Logprobs!),
                    ["finish_reason"] = calls is null ? c.FinishReason : "tool_calls",
                };
            }).ToArray()),
            ["usage"] = Usage(ids.Length, all.Sum(c => c.CompletionTokens)),
        });
    }

    /// <summary>
    /// Submits every prompt's choices (all or none: a refusal cancels those already queued), then calls
    /// <paramref name="admitted"/> (streams send their headers there), then collects the results.
    /// </summary>
    internal static async Task<ChoiceResult[]> RunAll(ServerState s, LoadedModel m, List<int[]> prompts, GenerationParams p,
        Func<Task>? admitted, DeltaSink? onDelta, CancellationToken ct)
    {
        // Choices of one response write to one stream: one at a time (a single choice needs no gate).
        var gate = prompts.Count * p.N > 1 ? new SemaphoreSlim(1) : null;
        async Task Gated(Func<Task> f)
        {
            await gate!.WaitAsync();
            try { await f(); } finally { gate.Release(); }
        }
        DeltaSink? Delta(int offset) => onDelta is null ? null : gate is null ? onDelta
            : new DeltaSink((i, t, lps) => Gated(() => onDelta.Write(offset + i, t, lps)), () => Gated(onDelta.Flush));
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

    internal static List<(string Role, string Content)> Messages(RequestReader r)
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
            if (rs is not ("system" or "user" or "assistant" or "developer" or "tool"))
                throw ApiException.BadRequest($"'{where}.role' = '{rs}': expected system, developer, user, assistant or tool", where + ".role");
            // An assistant turn that called tools may have no content; its calls are written as the model writes them.
            var calls = rs == "assistant" && e.TryGetProperty("tool_calls", out var tc) && tc.ValueKind != JsonValueKind.Null ? ToolCallsText(tc, where + ".tool_calls") : "";
            if (!e.TryGetProperty("content", out var content) || (content.ValueKind == JsonValueKind.Null && calls.Length > 0))
            {
                if (calls.Length == 0) throw ApiException.BadRequest($"'{where}.content' is required", where + ".content");
                list.Add((rs, calls));
                continue;
            }
            string text = content.ValueKind switch
            {
                JsonValueKind.String => content.GetString()!,
                // Content parts: only text parts are understood.
                JsonValueKind.Array => string.Concat(content.EnumerateArray().Select(part =>
                    part.ValueKind == JsonValueKind.Object && part.TryGetProperty("text", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString()
                    : throw ApiException.BadRequest($"'{where}.content' parts must be text parts", where + ".content", "invalid_type"))),
                _ => throw ApiException.BadRequest($"'{where}.content' must be a string", where + ".content", "invalid_type"),
            };
            if (calls.Length > 0) text = text.Trim().Length == 0 ? calls : text.Trim() + " " + calls;
            list.Add((rs == "developer" ? "system" : rs, text));
        }
        return list;
    }

    /// <summary>An assistant message's tool_calls [{id, type: function, function: {name, arguments (a JSON string)}}] as template text.</summary>
    static string ToolCallsText(JsonElement calls, string where)
    {
        if (calls.ValueKind != JsonValueKind.Array) throw ApiException.BadRequest($"'{where}' must be an array", where, "invalid_type");
        var sb = new System.Text.StringBuilder();
        int i = 0;
        foreach (var c in calls.EnumerateArray())
        {
            string at = $"{where}[{i++}]";
            if (c.ValueKind != JsonValueKind.Object || !c.TryGetProperty("function", out var f) || f.ValueKind != JsonValueKind.Object
                || !f.TryGetProperty("name", out var name) || name.ValueKind != JsonValueKind.String)
                throw ApiException.BadRequest($"'{at}' must be {{type: function, function: {{name, arguments}}}}", at, "invalid_type");
            string args = "{}";
            if (f.TryGetProperty("arguments", out var a) && a.ValueKind != JsonValueKind.Null)
            {
                if (a.ValueKind != JsonValueKind.String) throw ApiException.BadRequest($"'{at}.function.arguments' must be a JSON string", at + ".function.arguments", "invalid_type");
                try { args = JsonNode.Parse(a.GetString()!)?.ToJsonString() ?? "null"; }
                catch (JsonException) { throw ApiException.BadRequest($"'{at}.function.arguments' is not valid JSON", at + ".function.arguments"); }
            }
            sb.Append(ChatTemplate.ToolCall(name.GetString()!, args));
        }
        return sb.ToString();
    }

    internal static async Task Json(HttpContext ctx, JsonNode body, int status = 200)
    {
        ctx.Response.StatusCode = status;
        ctx.Response.ContentType = "application/json";
        await ctx.Response.WriteAsync(body.ToJsonString(), ctx.RequestAborted);
    }
}

/// <summary>
/// A stream chunk serialised once around one string field (built from the chunk with <see cref="Hole"/> in that field):
/// a token's event is then <see cref="Head"/>, the JSON string of its text, <see cref="Tail"/>, the same bytes the
/// whole chunk would serialise to.
/// </summary>
public sealed class ChunkTemplate
{
    /// <summary>Put where the text goes; serialised as <c>"\u0001"</c>, which no other field of a chunk contains.</summary>
    public const string Hole = "\u0001";
    const string HoleJson = "\"\\u0001\"";

    public ChunkTemplate(JsonNode chunk)
    {
        string s = chunk.ToJsonString();
        int at = s.IndexOf(HoleJson, StringComparison.Ordinal);
        if (at < 0 || s.IndexOf(HoleJson, at + 1, StringComparison.Ordinal) >= 0)
            throw new ArgumentException("the chunk must hold ChunkTemplate.Hole in exactly one string field", nameof(chunk));
        Head = System.Text.Encoding.UTF8.GetBytes(s[..at]);
        Tail = System.Text.Encoding.UTF8.GetBytes(s[(at + HoleJson.Length)..]);
    }

    public byte[] Head { get; }
    public byte[] Tail { get; }
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

    static readonly byte[] Data = "data: "u8.ToArray(), End = "\n\n"u8.ToArray();
    Utf8JsonWriter? _json;                              // reused for every event of the stream

    Utf8JsonWriter Json(System.IO.Pipelines.PipeWriter w)
    {
        if (_json is null) _json = new Utf8JsonWriter(w);
        else _json.Reset(w);
        return _json;
    }

    /// <summary>One event, serialised straight into the response pipe and sent with one flush.</summary>
    public async Task SendAsync(JsonNode chunk)
    {
        Write(chunk);
        await FlushAsync();
    }

    /// <summary>One event into the response pipe, not yet sent (<see cref="FlushAsync"/>).</summary>
    public void Write(JsonNode chunk)
    {
        var w = _ctx.Response.BodyWriter;
        System.Buffers.BuffersExtensions.Write<byte>(w, Data);
        var json = Json(w);
        chunk.WriteTo(json);
        json.Flush();
        System.Buffers.BuffersExtensions.Write<byte>(w, End);
    }

    /// <summary>One event whose only new part is <paramref name="text"/> (JSON-escaped as the chunk's own serialiser would), not yet sent.</summary>
    public void Write(ChunkTemplate chunk, string text)
    {
        var w = _ctx.Response.BodyWriter;
        System.Buffers.BuffersExtensions.Write<byte>(w, Data);
        System.Buffers.BuffersExtensions.Write<byte>(w, chunk.Head);
        var json = Json(w);
        json.WriteStringValue(text);
        json.Flush();
        System.Buffers.BuffersExtensions.Write<byte>(w, chunk.Tail);
        System.Buffers.BuffersExtensions.Write<byte>(w, End);
    }

    /// <summary>Sends the events written so far (one socket write).</summary>
    public async Task FlushAsync() => await _ctx.Response.BodyWriter.FlushAsync(_ctx.RequestAborted);

    public async Task DoneAsync()
    {
        await _ctx.Response.WriteAsync("data: [DONE]\n\n", _ctx.RequestAborted);
        await _ctx.Response.Body.FlushAsync(_ctx.RequestAborted);
    }
}
