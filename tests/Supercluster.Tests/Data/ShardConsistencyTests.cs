using System.Buffers.Binary;
using System.Text;
using Supercluster.Cli.Commands;
using Supercluster.Data;

namespace Supercluster.Tests.Data;

/// <summary>Issue 16 item 18: header, file size and meta.json must agree; empty input refused; invalid UTF-8 reported.</summary>
[Collection("Console")]
public class ShardConsistencyTests
{
    static DatasetMeta Prepare(TempDir dir, string name, int docs)
    {
        var texts = Enumerable.Range(0, docs).Select(i => new Document($"document number {i} with some text"));
        return Preparer.Run(texts, new PrepareOptions { OutDir = dir[name], Tokenizer = "byte", ValFraction = 0 }).Meta;
    }

    [Fact]
    public void HeaderThatUnderCountsItsTokensIsRefused()
    {
        using var dir = new TempDir();
        var meta = Prepare(dir, "d", 200);
        var shard = Path.Combine(dir["d"], meta.TrainShards[0].File);
        var bytes = File.ReadAllBytes(shard);
        BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(8), 4096); // header says 4,096 of ~7,000 tokens
        File.WriteAllBytes(shard, bytes);
        var e = Assert.Throws<BadInputException>(() => ShardReader.Open(shard));
        Assert.Contains("train_000000.bin", e.Message);
        Assert.Contains("header counts 4096 tokens", e.Message);
        Assert.Contains("under-counts", e.Message);
        Assert.Throws<BadInputException>(() => new TokenDataLoader(dir["d"], "train", 2, 16));
    }

    [Fact]
    public void ShardThatDisagreesWithMetaJsonIsRefused()
    {
        using var dir = new TempDir();
        var meta = Prepare(dir, "d", 200);
        // A consistent shard (header = size) that is shorter than meta.json says: e.g. replaced by another run's file.
        var shard = Path.Combine(dir["d"], meta.TrainShards[0].File);
        using (var w = new ShardWriter(shard, 1)) { w.Write(new int[5000]); w.Commit(); }
        var e = Assert.Throws<BadInputException>(() => new TokenDataLoader(dir["d"], "train", 2, 16));
        Assert.Contains("holds 5,000 tokens by its header and size", e.Message);
        Assert.Contains($"meta.json says {meta.TrainShards[0].Tokens:N0}", e.Message);
    }

    [Fact]
    public void EmptyFileIsRefusedWithExitTwo()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir["empty.txt"], "");
        File.WriteAllText(dir["blank.jsonl"], "\n\n");
        foreach (var f in new[] { "empty.txt", "blank.jsonl" })
        {
            var (code, _, err) = InProcessCli.Run([PrepareCommand.Create()], "prepare", "--input", dir[f], "--out", dir["out"], "--tokenizer", "byte");
            Assert.Equal(2, code);
            Assert.Contains("error: the corpus is empty", err);
            Assert.False(Directory.Exists(dir["out"]));
        }
    }

    [Fact]
    public void InvalidUtf8IsWarnedWithItsCount()
    {
        using var dir = new TempDir();
        File.WriteAllBytes(dir["bad.txt"], [.. Encoding.UTF8.GetBytes("caf"), 0xE9, .. Encoding.UTF8.GetBytes(" au lait "), 0xFF, 0xFE, .. Encoding.UTF8.GetBytes(" fin")]);
        File.WriteAllBytes(dir["bad.jsonl"], [.. Encoding.UTF8.GetBytes("{\"text\":\"a"), 0xC3, .. Encoding.UTF8.GetBytes("\"}\n{\"text\":\"ok\"}\n")]);
        File.WriteAllText(dir["good.txt"], "café \uFFFD is a real replacement character here, not an error");
        var (code, _, err) = InProcessCli.Run([PrepareCommand.Create()], "prepare", "--input", dir["bad.txt"], dir["bad.jsonl"], dir["good.txt"], "--out", dir["out"], "--tokenizer", "byte");
        Assert.Equal(0, code);
        Assert.True(err.Contains($"warning: {dir["bad.txt"]} is not valid UTF-8: 3 invalid byte sequence(s) replaced with U+FFFD"), err);
        Assert.Contains($"warning: {dir["bad.jsonl"]} is not valid UTF-8: 1 invalid byte sequence(s)", err);
        Assert.DoesNotContain("good.txt", err);
    }
}
