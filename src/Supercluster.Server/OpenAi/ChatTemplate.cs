using System.Text;

namespace Supercluster.Server.OpenAi;

/// <summary>
/// The plain chat template for base (not instruction-tuned) models: each message becomes a paragraph
/// "Role: content" separated by blank lines, and the prompt ends with "Assistant:" for the model to continue:
/// <code>
/// System: You are terse.
///
/// User: Hello
///
/// Assistant:
/// </code>
/// Generation stops at the end-of-text token or when the model starts a new turn ("\nUser:" or "\nSystem:").
/// </summary>
public static class ChatTemplate
{
    public static readonly IReadOnlyList<string> Stops = ["\nUser:", "\nSystem:"];

    public static string Render(IReadOnlyList<(string Role, string Content)> messages)
    {
        var sb = new StringBuilder();
        foreach (var (role, content) in messages)
            sb.Append(char.ToUpperInvariant(role[0])).Append(role[1..]).Append(": ").Append(content.Trim()).Append("\n\n");
        sb.Append("Assistant:");
        return sb.ToString();
    }

    // ---- tools: a "Tools:" paragraph listing the functions, calls written as <tool_call>{json}</tool_call> ----

    public const string ToolCallOpen = "<tool_call>", ToolCallClose = "</tool_call>";

    /// <summary>An assistant's call as the model writes it: <c>&lt;tool_call&gt;{"name":…,"arguments":{…}}&lt;/tool_call&gt;</c>.</summary>
    public static string ToolCall(string name, string argumentsJson) =>
        $"{ToolCallOpen}{{\"name\":{System.Text.Json.JsonSerializer.Serialize(name)},\"arguments\":{argumentsJson}}}{ToolCallClose}";

    /// <summary>The "tools" message that goes first when a request has tools: one JSON line per function and how to call one.</summary>
    public static (string Role, string Content) ToolsMessage(IEnumerable<(string Name, string? Description, System.Text.Json.Nodes.JsonNode? Parameters)> functions)
    {
        var sb = new StringBuilder("You may call these functions:\n");
        foreach (var (name, description, parameters) in functions)
            sb.Append(new System.Text.Json.Nodes.JsonObject { ["name"] = name, ["description"] = description, ["parameters"] = parameters?.DeepClone() }.ToJsonString()).Append('\n');
        sb.Append($"To call one, reply with {ToolCall("NAME", "{ARGUMENTS}")}; the result comes back as a Tool message.");
        return ("tools", sb.ToString());
    }
}
