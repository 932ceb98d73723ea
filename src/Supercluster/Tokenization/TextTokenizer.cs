namespace Supercluster.Tokenization;

/// <summary>
/// The few things training and sampling need from a tokenizer. Implementations are thread-safe for <see cref="Encode"/>
/// (prepare tokenizes on all cores with one instance).
/// </summary>
public abstract class TextTokenizer
{
    /// <summary>Name as accepted by <see cref="Tokenizers.Create"/> (gpt2, cl100k, o200k, byte).</summary>
    public abstract string Name { get; }

    /// <summary>Number of token ids (largest id + 1), special tokens included.</summary>
    public abstract int VocabSize { get; }

    /// <summary>End-of-text token that separates documents.</summary>
    public abstract int EotToken { get; }

    /// <summary>Token ids of <paramref name="text"/> (no EOT appended).</summary>
    public abstract int[] Encode(string text);

    /// <summary>Text of a token sequence; invalid UTF-8 becomes U+FFFD.</summary>
    public abstract string Decode(ReadOnlySpan<int> tokens);

    /// <summary>
    /// Raw bytes of one token. For streaming output feed these to a <see cref="System.Text.Decoder"/> (UTF-8):
    /// a single token may hold only part of a multi-byte character.
    /// </summary>
    public abstract byte[] TokenBytes(int token);

    /// <summary>Text of one token on its own (a partial character shows as U+FFFD; prefer <see cref="TokenBytes"/> for streams).</summary>
    public string DecodeToken(int token) => Decode([token]);
}
