using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;
using Supercluster.Checkpointing;
using Supercluster.Runtime;

namespace Supercluster.Tokenization;

/// <summary>
/// GPT-2 (r50k) BPE. Microsoft.ML.Tokenizers has no data package for it, so we take the ranks from the npm
/// <c>tiktoken</c> package (<c>encoders/gpt2.json</c>), convert them once to the standard tiktoken text format
/// (<c>base64token rank</c> per line) in the cache, and load that with GPT-2's pre-tokenizer regex. Encoding goes through
/// our <see cref="Gpt2BpeEncoder"/> (same ids, faster); the library is the reference (<see cref="LoadReference"/>) and decodes.
/// </summary>
public static class Gpt2Ranks
{
    public const string NpmPackage = "tiktoken";
    public const string NpmVersion = "1.0.22"; // pinned: checked with `npm view tiktoken version`
    public const string Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
    public const int EndOfText = 50256;
    public const string EndOfTextText = "<|endoftext|>";

    /// <summary>Loads (fetching and converting on first use) the GPT-2 tokenizer.</summary>
    public static TextTokenizer Load()
    {
        var ranksFile = RanksFile();
        var reference = new Lazy<TiktokenTokenizer>(() => LoadLibrary(ranksFile));
        Func<string, int[]> longPiece = piece => [.. reference.Value.EncodeToIds(piece)];
        var source = File.ReadAllBytes(ranksFile);
        var tablesFile = TablesFile(ranksFile);
        var fast = File.Exists(tablesFile) ? Gpt2BpeEncoder.ReadTables(File.ReadAllBytes(tablesFile), source, EndOfTextText, longPiece) : null;
        if (fast is null)
        {
            fast = new Gpt2BpeEncoder(File.ReadLines(ranksFile), EndOfTextText, longPiece);
            try { DurableFile.WriteAllBytes(tablesFile, fast.WriteTables(source)); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { /* a read-only cache only costs load time */ }
        }
        return new TiktokenTextTokenizer("gpt2", () => reference.Value, fast, EndOfText);
    }

    /// <summary>The encoder's parsed tables next to <paramref name="ranksFile"/> (<see cref="Gpt2BpeEncoder.WriteTables"/>): loads several times faster than the text.</summary>
    public static string TablesFile(string ranksFile) => Path.ChangeExtension(ranksFile, ".tables");

    /// <summary>GPT-2 through Microsoft.ML.Tokenizers alone: the reference the fast encoder is tested against.</summary>
    public static TextTokenizer LoadReference() => new TiktokenTextTokenizer("gpt2", LoadLibrary(RanksFile()));

    /// <summary>The ranks in tiktoken text format, fetched and converted on first use.</summary>
    public static string RanksFile()
    {
        var ranksFile = CachedRanksFile();
        if (!File.Exists(ranksFile))
        {
            var package = NpmAssets.GetPackage(NpmPackage, NpmVersion);
            Convert(Path.Combine(package, "encoders", "gpt2.json"), ranksFile);
        }
        return ranksFile;
    }

    /// <summary>Where <see cref="RanksFile"/> keeps the ranks (present once fetched).</summary>
    public static string CachedRanksFile() => Path.Combine(NpmAssets.CacheRoot(), "tokenizers", $"gpt2-tiktoken-{NpmVersion}.tiktoken");

    static TiktokenTokenizer LoadLibrary(string ranksFile)
    {
        var specials = new Dictionary<string, int> { [EndOfTextText] = EndOfText };
        var pre = new RegexPreTokenizer(new Regex(Pattern, RegexOptions.Compiled), specials);
        using var stream = File.OpenRead(ranksFile);
        return TiktokenTokenizer.Create(stream, pre, normalizer: null, specialTokens: specials);
    }

    /// <summary>
    /// gpt2.json holds <c>bpe_ranks</c>: lines <c>&lt;c&gt; &lt;offset&gt; b64 b64 …</c>, where the i-th base64 token
    /// of a line has rank offset+i. Writes <c>b64 rank</c> lines to <paramref name="output"/> atomically.
    /// </summary>
    public static void Convert(string gpt2Json, string output)
    {
        using var doc = JsonDocument.Parse(File.ReadAllBytes(gpt2Json));
        var ranks = doc.RootElement.GetProperty("bpe_ranks").GetString()
            ?? throw new BadInputException($"{gpt2Json}: bpe_ranks is not a string");
        Directory.CreateDirectory(Path.GetDirectoryName(output)!);
        var temp = $"{output}.{Guid.NewGuid():N}.tmp";
        try
        {
            using (var writer = new StreamWriter(temp, false, new UTF8Encoding(false)))
            {
                int count = 0;
                foreach (var line in ranks.Split('\n', StringSplitOptions.RemoveEmptyEntries))
                {
                    var parts = line.Split(' ');
                    if (parts.Length < 2 || !int.TryParse(parts[1], out var offset))
                        throw new BadInputException($"{gpt2Json}: unexpected bpe_ranks line starting '{line[..Math.Min(20, line.Length)]}'");
                    for (int i = 2; i < parts.Length; i++)
                    {
                        writer.Write(parts[i]); writer.Write(' '); writer.Write(offset + i - 2); writer.Write('\n');
                        count++;
                    }
                }
                if (count != EndOfText) throw new BadInputException($"{gpt2Json}: expected {EndOfText} ranks, found {count}");
            }
            File.Move(temp, output, overwrite: true);
        }
        finally
        {
            if (File.Exists(temp)) File.Delete(temp);
        }
    }
}
