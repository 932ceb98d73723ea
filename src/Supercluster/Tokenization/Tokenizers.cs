using System.Collections.Concurrent;
using Microsoft.ML.Tokenizers;

namespace Supercluster.Tokenization;

/// <summary>Tokenizers by name. Instances are cached: loading BPE ranks takes a second and they are immutable.</summary>
public static class Tokenizers
{
    /// <summary>Names <see cref="Create"/> accepts.</summary>
    public static IReadOnlyList<string> Names { get; } = ["gpt2", "cl100k", "o200k", "byte"];

    static readonly ConcurrentDictionary<string, Lazy<TextTokenizer>> Cache = new();

    /// <summary>The tokenizer called <paramref name="name"/>; unknown names are bad input.</summary>
    public static TextTokenizer Create(string name)
    {
        var key = (name ?? "").Trim().ToLowerInvariant();
        if (!Names.Contains(key))
            throw new BadInputException($"unknown tokenizer '{name}'; expected one of: {string.Join(", ", Names)}");
        return Cache.GetOrAdd(key, k => new Lazy<TextTokenizer>(() => Load(k))).Value;
    }

    /// <summary>
    /// Starts building <paramref name="name"/> on the thread pool (a known name); a later <see cref="Create"/> gets that
    /// instance, or its failure, when it is ready. Not gpt2's first use: that downloads, and a process that ends early
    /// (help, bad input) would cut the download short; <see cref="Create"/> fetches it in the foreground instead.
    /// </summary>
    public static void Preload(string name)
    {
        if (name == "gpt2" && !File.Exists(Gpt2Ranks.CachedRanksFile())) return;
        Task.Run(() => { try { Create(name); } catch (Exception) { /* Create reports it to its caller */ } });
    }

    static TextTokenizer Load(string name) => name switch
    {
        "gpt2" => Gpt2Ranks.Load(),
        "cl100k" => new TiktokenTextTokenizer("cl100k", TiktokenTokenizer.CreateForEncoding("cl100k_base")),
        "o200k" => new TiktokenTextTokenizer("o200k", TiktokenTokenizer.CreateForEncoding("o200k_base")),
        "byte" => new ByteTokenizer(),
        _ => throw new InvalidOperationException(name),
    };
}
