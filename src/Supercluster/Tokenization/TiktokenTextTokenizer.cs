using System.Text;
using Microsoft.ML.Tokenizers;

namespace Supercluster.Tokenization;

/// <summary>Byte-level BPE (GPT-2, cl100k, o200k) through Microsoft.ML.Tokenizers' tiktoken implementation.</summary>
public sealed class TiktokenTextTokenizer : TextTokenizer
{
    readonly Lazy<TiktokenTokenizer> _inner;
    readonly Gpt2BpeEncoder? _fast;
    readonly Lazy<IReadOnlyDictionary<int, ReadOnlyMemory<byte>>?> _bytes;

    /// <summary>Encodes and decodes with <paramref name="inner"/>; eot and vocabulary size are read from it.</summary>
    public TiktokenTextTokenizer(string name, TiktokenTokenizer inner, string eot = "<|endoftext|>")
    {
        Name = name;
        _inner = new(inner);
        _bytes = new(() => RawDecoder(inner));
        EotToken = inner.SpecialTokens?.TryGetValue(eot, out var id) == true
            ? id : throw new ArgumentException($"tokenizer {name} has no special token {eot}");
        // Special tokens sit above the BPE ranks in gpt2/cl100k/o200k; the raw table (when readable) confirms it.
        int max = inner.SpecialTokens!.Values.Max();
        if (_bytes.Value is { Count: > 0 } table) max = Math.Max(max, table.Keys.Max());
        VocabSize = max + 1;
    }

    /// <summary>
    /// <paramref name="fast"/> encodes (same ids as <paramref name="inner"/>, tested); <paramref name="inner"/> decodes and
    /// is built only when first needed: <c>prepare</c> never decodes, and building it costs as much as loading
    /// <paramref name="fast"/>. The special token <paramref name="eotToken"/> sits above the ranks.
    /// </summary>
    public TiktokenTextTokenizer(string name, Func<TiktokenTokenizer> inner, Gpt2BpeEncoder fast, int eotToken)
    {
        Name = name;
        _inner = new(inner);
        _fast = fast;
        _bytes = new(() => RawDecoder(_inner.Value));
        EotToken = eotToken;
        VocabSize = Math.Max(eotToken, fast.MaxId) + 1;
    }

    public override string Name { get; }
    public override int VocabSize { get; }
    public override int EotToken { get; }

    public override int[] Encode(string text) => text.Length == 0 ? [] : _fast is { } f ? f.Encode(text) : [.. _inner.Value.EncodeToIds(text)];

    public override string Decode(ReadOnlySpan<int> tokens) => _inner.Value.Decode(tokens.ToArray());

    public override byte[] TokenBytes(int token)
    {
        if (_bytes.Value is { } table && table.TryGetValue(token, out var bytes)) return bytes.ToArray();
        foreach (var (text, id) in _inner.Value.SpecialTokens ?? new Dictionary<string, int>())
            if (id == token) return Encoding.UTF8.GetBytes(text);
        if (token >= 0 && token < VocabSize) return Encoding.UTF8.GetBytes(Decode([token])); // fallback: lossy for partial characters
        throw new ArgumentOutOfRangeException(nameof(token), token, $"not a {Name} token");
    }

    /// <summary>
    /// The id→bytes table is not public in Microsoft.ML.Tokenizers 2.0.1 (only a lossy string vocabulary is), but exact
    /// bytes are what streaming output needs, so read it by reflection; null if a later version renames it.
    /// </summary>
    static IReadOnlyDictionary<int, ReadOnlyMemory<byte>>? RawDecoder(TiktokenTokenizer inner) =>
        typeof(TiktokenTokenizer).GetProperty("Decoder", System.Reflection.BindingFlags.Instance | System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Public)
            ?.GetValue(inner) as IReadOnlyDictionary<int, ReadOnlyMemory<byte>>;
}
