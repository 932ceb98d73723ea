using Supercluster.Inference;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Supercluster.Server.OpenAi;

/// <summary>
/// vLLM's helpers: <c>POST /tokenize</c> ({model?, prompt} or {model?, messages, add_generation_prompt?} →
/// {count, max_model_len, tokens}) and <c>POST /detokenize</c> ({model?, tokens} → {prompt}). Messages are rendered
/// with the chat template exactly as <c>/v1/chat/completions</c> renders them (ending with "Assistant:").
/// </summary>
public static class TokenizeEndpoints
{
    public static async Task Tokenize(HttpContext ctx, ServerState s)
    {
        var m = s.RequireModel();
        var (r, doc) = await RequestReader.ReadAsync(ctx.Request, ctx.RequestAborted);
        using var _ = doc;
        CompletionEndpoints.CheckModel(r, m);
        r.Bool("add_special_tokens");          // our tokenizers add none either way
        if (r.Bool("add_generation_prompt") == false)
            throw ApiException.BadRequest("'add_generation_prompt' = false is not supported: the chat template always ends with the assistant's turn", "add_generation_prompt");
        bool hasPrompt = r.Has("prompt"), hasMessages = r.Has("messages");
        if (hasPrompt == hasMessages)
            throw ApiException.BadRequest("give exactly one of 'prompt' (a string) and 'messages'", hasPrompt ? "messages" : "prompt", hasPrompt ? null : "missing_required_parameter");
        string text = hasPrompt ? r.String("prompt")! : ChatTemplate.Render(CompletionEndpoints.Messages(r));
        r.RejectUnread();
        var ids = text.Length == 0 ? [] : m.Tokenizer.Encode(text);
        await CompletionEndpoints.Json(ctx, new JsonObject
        {
            ["count"] = ids.Length, ["max_model_len"] = m.Context,
            ["tokens"] = new JsonArray(ids.Select(t => (JsonNode)t).ToArray()),
        });
    }

    public static async Task Detokenize(HttpContext ctx, ServerState s)
    {
        var m = s.RequireModel();
        var (r, doc) = await RequestReader.ReadAsync(ctx.Request, ctx.RequestAborted);
        using var _ = doc;
        CompletionEndpoints.CheckModel(r, m);
        if (r.Get("tokens") is not { } v) throw ApiException.BadRequest("'tokens' is required", "tokens", "missing_required_parameter");
        if (v.ValueKind != JsonValueKind.Array) throw ApiException.BadRequest("'tokens' must be an array of token ids", "tokens", "invalid_type");
        var ids = new List<int>();
        int vocab = Math.Min(m.Tokenizer.VocabSize, m.Model.Config.VocabSize);
        foreach (var e in v.EnumerateArray())
        {
            if (e.ValueKind != JsonValueKind.Number || !e.TryGetInt32(out var t)) throw ApiException.BadRequest("'tokens' must be an array of token ids", "tokens", "invalid_type");
            if (t < 0 || t >= vocab) throw ApiException.BadRequest($"token id {t} is outside the vocabulary (0 to {vocab - 1})", "tokens", "invalid_token");
            ids.Add(t);
        }
        r.RejectUnread();
        await CompletionEndpoints.Json(ctx, new JsonObject { ["prompt"] = m.Tokenizer.Decode(ids.ToArray()) });
    }
}
