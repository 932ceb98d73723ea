using System.Text;
using Supercluster.Runtime;
using Supercluster.Tokenization;

namespace Supercluster.Tests.Tokenization;

public class TokenizerTests
{
    public static TheoryData<string, string> RoundTripCases()
    {
        var data = new TheoryData<string, string>();
        string[] texts = ["Hello, world! 123", "Café naïve façade Ångström", "emoji 🎉👩‍👩‍👧 ok", "日本語のテキスト 中文 한국어", "", "  spaces\n\ttabs\r\n  "];
        foreach (var name in Tokenizers.Names)
            foreach (var t in texts) data.Add(name, t);
        return data;
    }

    [Theory]
    [MemberData(nameof(RoundTripCases))]
    public void EncodeDecodeRoundTrips(string name, string text)
    {
        var tok = Tokenizers.Create(name);
        var ids = tok.Encode(text);
        Assert.All(ids, id => Assert.InRange(id, 0, tok.VocabSize - 1));
        Assert.Equal(text, tok.Decode(ids));
        // Streaming: concatenated token bytes are the exact UTF-8 of the text, even when tokens split characters.
        var bytes = ids.SelectMany(tok.TokenBytes).ToArray();
        Assert.Equal(Encoding.UTF8.GetBytes(text), bytes);
        if (text.Length == 0) Assert.Empty(ids);
    }

    // Expected ids come from the npm `tiktoken` package 1.0.22 (the OpenAI Rust core compiled to wasm), run under node.
    const string Mixed = "I'm here, aren't you?  Café ☕ 日本語 🎉\n\n  x";

    [Theory]
    [InlineData("gpt2", "Hello world", new[] { 15496, 995 })]
    [InlineData("gpt2", "The quick brown fox 12345", new[] { 464, 2068, 7586, 21831, 17031, 2231 })]
    [InlineData("gpt2", Mixed, new[] { 40, 1101, 994, 11, 3588, 470, 345, 30, 220, 42151, 34719, 243, 10545, 245, 98, 17312, 105, 45739, 252, 12520, 236, 231, 628, 220, 2124 })]
    [InlineData("cl100k", "Hello world", new[] { 9906, 1917 })]
    [InlineData("cl100k", Mixed, new[] { 40, 2846, 1618, 11, 7784, 956, 499, 30, 220, 66771, 26182, 243, 76502, 22656, 45918, 252, 11410, 236, 231, 271, 220, 865 })]
    [InlineData("o200k", "Hello world", new[] { 13225, 2375 })]
    [InlineData("o200k", "The quick brown fox 12345", new[] { 976, 4853, 19705, 68347, 220, 7633, 2548 })]
    [InlineData("byte", "Hé", new[] { 72, 0xC3, 0xA9 })]
    public void MatchesReferenceTiktoken(string name, string text, int[] expected) =>
        Assert.Equal(expected, Tokenizers.Create(name).Encode(text));

    [Theory]
    [InlineData("gpt2", 50257, 50256)]
    [InlineData("cl100k", 100277, 100257)]
    [InlineData("o200k", 200019, 199999)]
    [InlineData("byte", 257, 256)]
    public void VocabAndEndOfText(string name, int vocab, int eot)
    {
        var tok = Tokenizers.Create(name);
        Assert.Equal(name, tok.Name);
        Assert.Equal(vocab, tok.VocabSize);
        Assert.Equal(eot, tok.EotToken);
        Assert.Equal("<|endoftext|>", tok.DecodeToken(eot));
    }

    [Fact]
    public void UnknownTokenizerNamesValueAndChoices()
    {
        var e = Assert.Throws<BadInputException>(() => Tokenizers.Create("gpt5"));
        Assert.Contains("'gpt5'", e.Message);
        Assert.Contains("gpt2, cl100k, o200k, byte", e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void ByteDecodeReplacesInvalidUtf8()
    {
        var tok = Tokenizers.Create("byte");
        Assert.Equal("a\uFFFDb", tok.Decode([97, 0xFF, 98]));
    }

    [Fact]
    public void Gpt2RanksConvertToTiktokenLines()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir["gpt2.json"], "{\"bpe_ranks\":\"! 0 IQ== Ig==\\n# 2 Iw==\"}");
        var e = Assert.Throws<BadInputException>(() => Gpt2Ranks.Convert(dir["gpt2.json"], dir["out.tiktoken"]));
        Assert.Contains("expected 50256 ranks, found 3", e.Message); // a truncated ranks file is refused…
        Assert.False(File.Exists(dir["out.tiktoken"]));                 // …and leaves no cache entry
    }

    [Fact]
    public void NpmFailureIsOneLineBadInput()
    {
        using var dir = new TempDir();
        var e = Assert.Throws<BadInputException>(() => NpmAssets.GetPackage("is-number", "0.0.0-does-not-exist", dir.Path));
        Assert.Contains("npm pack is-number@0.0.0-does-not-exist failed", e.Message);
        Assert.DoesNotContain('\n', e.Message);
        Assert.False(Directory.Exists(Path.Combine(dir.Path, "npm", "is-number@0.0.0-does-not-exist")));
        Assert.Empty(Directory.GetDirectories(Path.Combine(dir.Path, "npm"), ".tmp-*")); // temp folder cleaned up
    }

    [Fact]
    public void NpmPackageIsFetchedOnceAndCached()
    {
        using var dir = new TempDir();
        var folder = NpmAssets.GetPackage("is-number", "7.0.0", dir.Path);
        Assert.Equal(Path.Combine(dir.Path, "npm", "is-number@7.0.0"), folder);
        Assert.Contains("\"version\": \"7.0.0\"", File.ReadAllText(Path.Combine(folder, "package.json")));
        File.WriteAllText(Path.Combine(folder, "marker"), "x");
        Assert.Equal(folder, NpmAssets.GetPackage("is-number", "7.0.0", dir.Path));
        Assert.True(File.Exists(Path.Combine(folder, "marker"))); // second call served from the cache
    }
}
