using Supercluster.Tokenization;

namespace Supercluster.Inference;

/// <summary>
/// Writes tokens as text as they arrive. A token can end inside a multi-byte UTF-8 character, so text is written
/// only up to the last complete character (no U+FFFD at the end) and the rest waits for the next token.
/// </summary>
public sealed class TokenStreamer(TextTokenizer tokenizer, TextWriter output)
{
    readonly List<int> _pending = [];

    public void Add(int token)
    {
        _pending.Add(token);
        string text = tokenizer.Decode(_pending.ToArray());
        if (text.Length > 0 && text[^1] == '\uFFFD' && _pending.Count < 8) return;
        output.Write(text);
        output.Flush();
        _pending.Clear();
    }

    public void Flush()
    {
        if (_pending.Count > 0) output.Write(tokenizer.Decode(_pending.ToArray()));
        _pending.Clear();
        output.Flush();
    }
}
