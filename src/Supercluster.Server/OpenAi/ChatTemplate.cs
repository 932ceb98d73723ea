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
}
