using System.Text;

namespace Supercluster.Inference;

/// <summary>
/// The one chat template, shared by <c>serve</c> (prompts) and <c>prepare --format chat</c> (training data), for base
/// (not instruction-tuned) models: each message becomes a paragraph "Role: content" separated by blank lines, and the
/// prompt ends with "Assistant:" for the model to continue:
/// <code>
/// System: You are terse.
///
/// User: Hello
///
/// Assistant:
/// </code>
/// Generation stops at the end-of-text token or when the model starts a new turn ("\nUser:" or "\nSystem:").
/// Training renders the same text (<see cref="RenderTraining"/>), so what a fine-tuned model learns to continue is
/// exactly what serving asks it to continue.
/// </summary>
public static class ChatTemplate
{
    public static readonly IReadOnlyList<string> Stops = ["\nUser:", "\nSystem:"];
    public static readonly IReadOnlyList<string> Roles = ["system", "user", "assistant"];
    const string Separator = "\n\n", AssistantHeader = "Assistant:";

    /// <summary>The prompt for a reply to <paramref name="messages"/>: every message, then "Assistant:".</summary>
    public static string Render(IReadOnlyList<(string Role, string Content)> messages)
    {
        var sb = new StringBuilder();
        foreach (var (role, content) in messages) sb.Append(Turn(role, content));
        sb.Append(AssistantHeader);
        return sb.ToString();
    }

    /// <summary>
    /// A whole conversation as text segments, each marked trained or not: only an assistant's reply (" content") is
    /// trained, with the blank line that ends it when another turn follows (the model learns to end its turn; the
    /// end-of-text token after the last reply is the caller's). The concatenation of the segments before any reply is
    /// <see cref="Render"/> of the messages before it.
    /// </summary>
    public static IReadOnlyList<(string Text, bool Trained)> RenderTraining(IReadOnlyList<(string Role, string Content)> messages)
    {
        var parts = new List<(string, bool)>();
        for (int i = 0; i < messages.Count; i++)
        {
            var (role, content) = messages[i];
            if (role != "assistant") { parts.Add((Turn(role, content), false)); continue; }
            parts.Add((AssistantHeader, false));
            parts.Add((" " + content.Trim() + (i + 1 < messages.Count ? Separator : ""), true));
        }
        return parts;
    }

    static string Turn(string role, string content) => $"{char.ToUpperInvariant(role[0])}{role[1..]}: {content.Trim()}{Separator}";

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
