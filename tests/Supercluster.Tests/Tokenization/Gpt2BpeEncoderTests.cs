using System.Text;
using Supercluster.Data;
using Supercluster.Tokenization;

namespace Supercluster.Tests.Tokenization;

/// <summary>
/// Our GPT-2 encoder (<see cref="Gpt2BpeEncoder"/>, what <c>Tokenizers.Create("gpt2")</c> uses) against
/// Microsoft.ML.Tokenizers with GPT-2's regex (the reference): identical ids, exactly, and a lossless round trip.
/// </summary>
public class Gpt2BpeEncoderTests
{
    static readonly TextTokenizer Fast = Tokenizers.Create("gpt2");
    static readonly TextTokenizer Reference = Gpt2Ranks.LoadReference();

    [Fact]
    public void SameIdsAsReferenceOnSotu()
    {
        long tokens = 0;
        foreach (var doc in SampleCorpora.Sotu())
        {
            var ids = Fast.Encode(doc.Text);
            Assert.Equal(Reference.Encode(doc.Text), ids);
            tokens += ids.Length;
        }
        Assert.True(tokens > 2_000_000, $"{tokens} tokens: the whole sample was encoded");
    }

    // Fragments the pre-tokenizer must split exactly as the regex does: contractions (and look-alikes), every kind of
    // white space in runs before words and at the end, Unicode letters/numbers/marks, emoji and astral characters
    // (surrogates: neither letter nor number to .NET's Regex), CJK, and runs long enough to leave the piece cache
    // (> 64 characters) and the array merge (> 1024 bytes: the reference path).
    static readonly string[] Fragments =
    [
        "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'LL", "'x", "''s", " 's", "' ", "don't", "I'm", "we'll", "O'Neil",
        " ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n ", "\u00A0", "\u2003", "\u3000", "\u2028", "\u0085", "\v\f",
        "hello", "Hello", " world", "WORLD", "naïve", "Ångström", "e\u0301", " \u0301x", "Straße", "ǅemal", "ʰmod",
        "123", " 4567", "٣٤٥", "²³", "½", "Ⅻ", "x2", "3rd", "1,000.50", "$", " $$", "...", "!?", "—", "«»", "©®",
        "日本語", "中文", "한국어", "テキスト", "ｆｕｌｌ", "Ω≈ç√", "עִבְרִית", "العربية", "हिन्दी", "ไทย",
        "🎉", "👩‍👩‍👧", "☕", "❤️", "🇺🇸", "𝐀𝐁", "𠜎", "x🎉y", " 🎉",
        "<|endoftext|>", "<|endoftext", "|>",
    ];

    static string Adversarial(Random rng, int pieces)
    {
        var sb = new StringBuilder();
        for (int i = 0; i < pieces; i++)
        {
            int r = rng.Next(100);
            if (r < 3) sb.Append(new string("a ='\n9é日"[rng.Next(8)], rng.Next(60, 1500)));               // long runs
            else if (r < 5) for (int k = rng.Next(70, 700); k > 0; k--) sb.Append((char)('a' + rng.Next(26))); // long word
            else if (r < 8) for (int k = rng.Next(1, 12); k > 0; k--) sb.Append((char)rng.Next(0x20, 0x3000)); // random BMP (no surrogates)
            else sb.Append(Fragments[rng.Next(Fragments.Length)]);
        }
        return sb.ToString();
    }

    [Fact]
    public void SameIdsAsReferenceOnAdversarialText()
    {
        var rng = new Random(14);
        for (int doc = 0; doc < 300; doc++)
        {
            var text = Adversarial(rng, rng.Next(1, 200));
            var ids = Fast.Encode(text);
            Assert.Equal(Reference.Encode(text), ids);
            Assert.Equal(text, Fast.Decode(ids));
        }
        foreach (var a in Fragments)
            foreach (var b in Fragments)
                Assert.Equal(Reference.Encode(a + b), Fast.Encode(a + b));
    }

    [Fact]
    public void LoneSurrogatesEncodeAsTheReferenceDoes()
    {
        foreach (var text in new[] { "a\uD83Cb", "\uDF89", "x \uD83C", "\uDC00\uD800", "\uD83C\uDF89\uD83C", "é\uDFFF日" })
            Assert.Equal(Reference.Encode(text), Fast.Encode(text));
    }

    [Fact]
    public void PiecesFollowTheRegex()
    {
        // Each piece of a mixed string, as GPT-2's pattern splits it (checked against Regex.Matches).
        const string Text = "I'm  here,\tthey'LL  see 42  apples\n\n  x  ";
        var pieces = new List<string>();
        for (int i = 0; i < Text.Length;) { int e = Gpt2BpeEncoder.PieceEnd(Text, i); pieces.Add(Text[i..e]); i = e; }
        var regex = System.Text.RegularExpressions.Regex.Matches(Text, Gpt2Ranks.Pattern).Select(m => m.Value).ToList();
        Assert.Equal(regex, pieces);
        Assert.Equal(["I", "'m", " ", " here", ",", "\t", "they", "'", "LL", " ", " see", " 42", " ", " apples", "\n\n ", " x", "  "], pieces);
    }

    [Fact]
    public void CachedTablesLoadTheSameEncoder()
    {
        var ranksFile = Gpt2Ranks.RanksFile();
        var source = File.ReadAllBytes(ranksFile);
        Func<string, int[]> longPiece = p => Reference.Encode(p);
        var built = new Gpt2BpeEncoder(File.ReadLines(ranksFile), Gpt2Ranks.EndOfTextText, longPiece);
        var tables = built.WriteTables(source);
        var loaded = Gpt2BpeEncoder.ReadTables(tables, source, Gpt2Ranks.EndOfTextText, longPiece);
        Assert.NotNull(loaded);
        Assert.Equal(tables, loaded.WriteTables(source)); // same vocabulary and merges, entry for entry
        Assert.Equal(built.MaxId, loaded.MaxId);
        var rng = new Random(3);
        for (int doc = 0; doc < 50; doc++)
        {
            var text = Adversarial(rng, rng.Next(1, 200));
            Assert.Equal(built.Encode(text), loaded.Encode(text));
        }
    }

    [Fact]
    public void CachedTablesOfAnotherSourceOrDamagedAreRejected()
    {
        var source = File.ReadAllBytes(Gpt2Ranks.RanksFile());
        var tables = new Gpt2BpeEncoder(File.ReadLines(Gpt2Ranks.RanksFile()), Gpt2Ranks.EndOfTextText, Reference.Encode).WriteTables(source);
        Func<string, int[]> none = _ => [];
        var otherSource = (byte[])source.Clone();
        otherSource[100] ^= 1;
        Assert.Null(Gpt2BpeEncoder.ReadTables(tables, otherSource, Gpt2Ranks.EndOfTextText, none));
        Assert.Null(Gpt2BpeEncoder.ReadTables(tables, source.AsSpan(1), Gpt2Ranks.EndOfTextText, none));
        var damaged = (byte[])tables.Clone();
        damaged[tables.Length / 2] ^= 0x40;
        Assert.Null(Gpt2BpeEncoder.ReadTables(damaged, source, Gpt2Ranks.EndOfTextText, none));
        Assert.Null(Gpt2BpeEncoder.ReadTables(tables.AsSpan(0, tables.Length - 9), source, Gpt2Ranks.EndOfTextText, none));
        var otherFormat = (byte[])tables.Clone();
        otherFormat[0] ^= 1;
        Assert.Null(Gpt2BpeEncoder.ReadTables(otherFormat, source, Gpt2Ranks.EndOfTextText, none));
    }

    [Fact]
    public void LoadingWritesTheTablesAndTheTokenizerDecodesWithoutBuildingItFirst()
    {
        // Tokenizers.Create("gpt2") (the static Fast above) has written the tables next to the ranks; they are valid.
        var ranksFile = Gpt2Ranks.RanksFile();
        _ = Fast.Encode("x");
        Assert.NotNull(Gpt2BpeEncoder.ReadTables(File.ReadAllBytes(Gpt2Ranks.TablesFile(ranksFile)), File.ReadAllBytes(ranksFile), Gpt2Ranks.EndOfTextText, _ => []));
        // Decoding builds the lazily made reference tokenizer on demand; vocabulary and eot match the reference's.
        Assert.Equal("Hello world", Fast.Decode(Fast.Encode("Hello world")));
        Assert.Equal(Reference.VocabSize, Fast.VocabSize);
        Assert.Equal(Reference.EotToken, Fast.EotToken);
        Assert.Equal(Reference.TokenBytes(50256), Fast.TokenBytes(50256));
        Assert.Equal(Reference.TokenBytes(31373), Fast.TokenBytes(31373));
    }
}
