using Supercluster.Inference;
using System.Text.Json;
using System.Text.Json.Nodes;
using Supercluster.Inference.Structured;

namespace Supercluster.Server.OpenAi;

/// <summary>A function the model may call: its name, description and JSON schema of arguments (compiled).</summary>
public sealed record ToolSpec(string Name, string? Description, JsonNode? Parameters, GrammarNode Arguments);

/// <summary>
/// <c>response_format</c>, <c>tools</c> and <c>tool_choice</c> turned into one grammar that constrained decoding follows.
/// Tool calls are written as <c>&lt;tool_call&gt;{"name":…,"arguments":{…}}&lt;/tool_call&gt;</c> (the chat template's
/// form, <see cref="ChatTemplate.ToolCall"/>). The rule for tool_choice:
/// <list type="bullet">
/// <item>"none": free text that may not start with the marker (no call can happen);</item>
/// <item>"auto" (default with tools): the model writes freely; a reply that starts (after whitespace) with the marker
///   is a tool call, and from the marker on it is constrained to exactly one valid call (a known name, arguments
///   matching that function's schema); any other start is plain content (or the response_format's JSON);</item>
/// <item>"required" / {"type":"function","function":{"name"}}: one call (of any / that function) is forced.</item>
/// </list>
/// </summary>
public static class StructuredOutput
{
    static readonly GrammarNode OptionalSpace = new LiteralNode("", " ");

    /// <summary>response_format → the grammar of the content, or null for text.</summary>
    public static GrammarNode? ResponseFormat(RequestReader r)
    {
        if (r.Get("response_format") is not { } v) return null;
        const string P = "response_format";
        if (v.ValueKind != JsonValueKind.Object || !v.TryGetProperty("type", out var t) || t.ValueKind != JsonValueKind.String)
            throw ApiException.BadRequest("'response_format' must be an object with a 'type' of text, json_object or json_schema", P, "invalid_type");
        switch (t.GetString())
        {
            case "text":
                return null;
            case "json_object":
                return FreeObjectNode.Instance;
            case "json_schema":
                if (!v.TryGetProperty("json_schema", out var js) || js.ValueKind != JsonValueKind.Object)
                    throw ApiException.BadRequest("'response_format.json_schema' must be an object {name, schema, strict}", P + ".json_schema", "invalid_type");
                if (!js.TryGetProperty("name", out var name) || name.ValueKind != JsonValueKind.String || !ValidName(name.GetString()!))
                    throw ApiException.BadRequest("'response_format.json_schema.name' must be a string of a-z, A-Z, 0-9, _ and - (at most 64)", P + ".json_schema.name");
                if (js.TryGetProperty("strict", out var strict) && strict.ValueKind is not (JsonValueKind.True or JsonValueKind.False or JsonValueKind.Null))
                    throw ApiException.BadRequest("'response_format.json_schema.strict' must be a boolean", P + ".json_schema.strict", "invalid_type");
                if (!js.TryGetProperty("schema", out var schema)) return FreeObjectNode.Instance;   // OpenAI: schema is optional
                return Compile(schema, P + ".json_schema.schema");
            default:
                throw ApiException.BadRequest($"'response_format.type' = '{t.GetString()}': expected text, json_object or json_schema", P + ".type");
        }
    }

    static bool ValidName(string n) => n.Length is > 0 and <= 64 && n.All(c => char.IsAsciiLetterOrDigit(c) || c is '_' or '-');

    static GrammarNode Compile(JsonElement schema, string param)
    {
        try { return SchemaCompiler.Compile(schema); }
        catch (SchemaException e) { throw ApiException.BadRequest($"'{param}': {e.Message}", param, "invalid_schema"); }
    }

    /// <summary>tools: [{type: "function", function: {name, description?, parameters?, strict?}}].</summary>
    public static List<ToolSpec>? Tools(RequestReader r)
    {
        if (r.Get("tools") is not { } v) return null;
        if (v.ValueKind != JsonValueKind.Array) throw ApiException.BadRequest("'tools' must be an array of {type: function, function: {…}}", "tools", "invalid_type");
        var list = new List<ToolSpec>();
        int i = 0;
        foreach (var t in v.EnumerateArray())
        {
            string where = $"tools[{i++}]";
            if (t.ValueKind != JsonValueKind.Object || !t.TryGetProperty("type", out var type) || type.ValueKind != JsonValueKind.String || type.GetString() != "function")
                throw ApiException.BadRequest($"'{where}.type' must be \"function\"", where + ".type");
            if (!t.TryGetProperty("function", out var f) || f.ValueKind != JsonValueKind.Object)
                throw ApiException.BadRequest($"'{where}.function' must be an object {{name, description, parameters}}", where + ".function", "invalid_type");
            if (!f.TryGetProperty("name", out var name) || name.ValueKind != JsonValueKind.String || !ValidName(name.GetString()!))
                throw ApiException.BadRequest($"'{where}.function.name' must be a string of a-z, A-Z, 0-9, _ and - (at most 64)", where + ".function.name");
            string? description = f.TryGetProperty("description", out var d) && d.ValueKind == JsonValueKind.String ? d.GetString() : null;
            JsonNode? parameters = null;
            GrammarNode args = FreeObjectNode.Instance;
            if (f.TryGetProperty("parameters", out var ps) && ps.ValueKind != JsonValueKind.Null)
            {
                if (ps.ValueKind != JsonValueKind.Object) throw ApiException.BadRequest($"'{where}.function.parameters' must be a JSON schema object", where + ".function.parameters", "invalid_type");
                parameters = JsonNode.Parse(ps.GetRawText());
                args = Compile(ps, where + ".function.parameters");
                if (args is not (ObjectNode or FreeObjectNode))
                    throw ApiException.BadRequest($"'{where}.function.parameters' must describe an object", where + ".function.parameters");
            }
            if (list.Any(x => x.Name == name.GetString()))
                throw ApiException.BadRequest($"'{where}.function.name' = '{name.GetString()}' is given twice", where + ".function.name");
            list.Add(new ToolSpec(name.GetString()!, description, parameters, args));
        }
        if (list.Count == 0) return null;
        if (list.Count > 128) throw ApiException.BadRequest($"'tools' has {list.Count} functions, at most 128 allowed", "tools");
        return list;
    }

    /// <summary>tool_choice → "none", "auto", "required", or the name of the function to call.</summary>
    public static string ToolChoice(RequestReader r, List<ToolSpec>? tools)
    {
        if (r.Get("tool_choice") is not { } v) return tools is null ? "none" : "auto";
        string choice;
        if (v.ValueKind == JsonValueKind.String && v.GetString() is "none" or "auto" or "required") choice = v.GetString()!;
        else if (v.ValueKind == JsonValueKind.Object && v.TryGetProperty("type", out var t) && t.ValueKind == JsonValueKind.String && t.GetString() == "function"
                 && v.TryGetProperty("function", out var f) && f.ValueKind == JsonValueKind.Object && f.TryGetProperty("name", out var n) && n.ValueKind == JsonValueKind.String)
        {
            choice = "function:" + n.GetString();
            if (tools?.Any(x => x.Name == n.GetString()) != true)
                throw ApiException.BadRequest($"'tool_choice' names the function '{n.GetString()}', which is not in 'tools'", "tool_choice");
        }
        else throw ApiException.BadRequest("'tool_choice' must be \"none\", \"auto\", \"required\" or {\"type\": \"function\", \"function\": {\"name\": …}}", "tool_choice", "invalid_type");
        if (tools is null && choice != "none") throw ApiException.BadRequest($"'tool_choice' = {v.GetRawText()} needs 'tools'", "tool_choice");
        return choice;
    }

    /// <summary>The grammar of one tool call of any of <paramref name="tools"/>.</summary>
    static GrammarNode Call(IEnumerable<ToolSpec> tools)
    {
        var alternatives = tools.Select(t => (GrammarNode)new ObjectNode(
        [
            new Property("name", "\"name\""u8.ToArray(), new LiteralNode([JsonSerializer.SerializeToUtf8Bytes(t.Name)]), true),
            new Property("arguments", "\"arguments\""u8.ToArray(), t.Arguments, true),
        ])).ToList();
        return new SequenceNode([OptionalSpace, new LiteralNode(ChatTemplate.ToolCallOpen),
            alternatives.Count == 1 ? alternatives[0] : new UnionNode(alternatives), new LiteralNode(ChatTemplate.ToolCallClose)]);
    }

    /// <summary>The grammar a chat reply follows, or null for free text (no tools, no response_format).</summary>
    public static GrammarNode? Grammar(GrammarNode? content, List<ToolSpec>? tools, string choice, bool chat)
    {
        // Chat replies follow "Assistant:", so a JSON reply may start with one space (trimmed from the message).
        GrammarNode? Content(string forbiddenStart) => content is null ? (forbiddenStart.Length == 0 ? null : new FreeTextNode(forbiddenStart))
            : chat ? new SequenceNode([OptionalSpace, content]) : content;
        if (tools is null) return Content("");
        return choice switch
        {
            "none" => Content(ChatTemplate.ToolCallOpen),
            "auto" => new UnionNode([Content(ChatTemplate.ToolCallOpen)!, Call(tools)]),
            "required" => Call(tools),
            _ => Call(tools.Where(t => "function:" + t.Name == choice)),
        };
    }

    /// <summary>
    /// A reply that is a tool call → its calls (OpenAI's shape: id, type function, function {name, arguments as a
    /// JSON string}); anything else (or a call that does not parse: generation stopped early) → null.
    /// </summary>
    public static JsonArray? ParseToolCalls(string text, List<ToolSpec>? tools)
    {
        if (tools is null) return null;
        var s = text.TrimStart();
        if (!s.StartsWith(ChatTemplate.ToolCallOpen, StringComparison.Ordinal)) return null;
        var calls = new JsonArray();
        while (s.StartsWith(ChatTemplate.ToolCallOpen, StringComparison.Ordinal))
        {
            int end = s.IndexOf(ChatTemplate.ToolCallClose, StringComparison.Ordinal);
            if (end < 0) return null;
            JsonNode? call;
            try { call = JsonNode.Parse(s[ChatTemplate.ToolCallOpen.Length..end]); }
            catch (JsonException) { return null; }
            if (call is not JsonObject o || o["name"] is not JsonValue nv || !nv.TryGetValue<string>(out var name) || tools.All(t => t.Name != name)
                || o["arguments"] is not JsonObject args) return null;
            calls.Add(new JsonObject
            {
                ["id"] = "call_" + Guid.NewGuid().ToString("N")[..24], ["type"] = "function",
                ["function"] = new JsonObject { ["name"] = name, ["arguments"] = args.ToJsonString() },
            });
            s = s[(end + ChatTemplate.ToolCallClose.Length)..].TrimStart();
        }
        return s.Length == 0 ? calls : null;
    }
}
