using System.Text.Json;
using Supercluster.Inference;

namespace Supercluster.Data;

/// <summary>One training conversation: its messages in order, and where it was read.</summary>
public sealed record Conversation(IReadOnlyList<(string Role, string Content)> Messages, string File, int Line);

/// <summary>
/// Reads chat fine-tuning JSONL: one record per line, either OpenAI-shaped <c>{"messages": [{"role", "content"}, …]}</c>
/// (roles system, user, assistant) or a <c>{"prompt", "completion"}</c> pair (a user turn and the assistant's reply).
/// A bad record is one <see cref="BadInputException"/> naming file, line and field; blank lines are skipped.
/// </summary>
public static class ChatRecords
{
    public static IEnumerable<Conversation> Read(string path)
    {
        if (!File.Exists(path)) throw new BadInputException($"--input: file '{path}' does not exist");
        int line = 0;
        foreach (var text in File.ReadLines(path))
        {
            line++;
            if (string.IsNullOrWhiteSpace(text)) continue;
            yield return Parse(text, path, line);
        }
    }

    public static Conversation Parse(string text, string file, int line)
    {
        string where = $"{file}:{line}";
        JsonDocument doc;
        try { doc = JsonDocument.Parse(text); }
        catch (JsonException e) { throw new BadInputException($"{where}: not JSON ({e.Message.Split(". ")[0]})"); }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw new BadInputException($"{where}: expected a JSON object with 'messages' or 'prompt'/'completion', got {root.ValueKind}");
            var messages = new List<(string, string)>();
            if (root.TryGetProperty("messages", out var ms))
            {
                if (ms.ValueKind != JsonValueKind.Array) throw new BadInputException($"{where}: field 'messages' must be an array of {{role, content}}");
                int i = 0;
                foreach (var m in ms.EnumerateArray())
                {
                    string field = $"messages[{i++}]";
                    if (m.ValueKind != JsonValueKind.Object) throw new BadInputException($"{where}: field '{field}' must be an object {{role, content}}");
                    string role = String(m, "role", $"{where}: field '{field}.role'");
                    if (!ChatTemplate.Roles.Contains(role))
                        throw new BadInputException($"{where}: field '{field}.role' is '{role}', expected one of {string.Join(", ", ChatTemplate.Roles)}");
                    messages.Add((role, String(m, "content", $"{where}: field '{field}.content'")));
                }
            }
            else if (root.TryGetProperty("prompt", out _) || root.TryGetProperty("completion", out _))
            {
                messages.Add(("user", String(root, "prompt", $"{where}: field 'prompt'")));
                messages.Add(("assistant", String(root, "completion", $"{where}: field 'completion'")));
            }
            else throw new BadInputException($"{where}: field 'messages' is missing (or give 'prompt' and 'completion')");
            if (!messages.Any(m => m.Item1 == "assistant")) throw new BadInputException($"{where}: field 'messages' has no assistant turn (nothing to train on)");
            return new Conversation(messages, file, line);
        }
    }

    static string String(JsonElement o, string name, string what)
    {
        if (!o.TryGetProperty(name, out var v)) throw new BadInputException($"{what} is missing");
        if (v.ValueKind != JsonValueKind.String) throw new BadInputException($"{what} must be a string, got {v.ValueKind}");
        var s = v.GetString()!;
        if (s.Trim().Length == 0) throw new BadInputException($"{what} is empty");
        return s;
    }
}
