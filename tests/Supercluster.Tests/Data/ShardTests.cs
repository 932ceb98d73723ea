using System.Buffers.Binary;
using Supercluster.Data;

namespace Supercluster.Tests.Data;

public class ShardTests
{
    static string Write(TempDir dir, string name, int version, int[] tokens)
    {
        var path = dir[name];
        using var w = new ShardWriter(path, version);
        w.Write(tokens);
        w.Commit();
        return path;
    }

    [Fact]
    public void Version1HeaderAndBodyRoundTrip()
    {
        using var dir = new TempDir();
        var tokens = Enumerable.Range(0, 70_000).Select(i => i % 50257).ToArray(); // more than one write buffer
        var path = Write(dir, "a.bin", 1, tokens);
        var bytes = File.ReadAllBytes(path);
        Assert.Equal(1024 + tokens.Length * 2, bytes.Length);
        Assert.Equal(20240520, BinaryPrimitives.ReadInt32LittleEndian(bytes));
        Assert.Equal(1, BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(4)));
        Assert.Equal(tokens.Length, BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(8)));
        Assert.Equal(50256, BinaryPrimitives.ReadUInt16LittleEndian(bytes.AsSpan(1024 + 50256 * 2)));
        using var r = ShardReader.Open(path, vocabSize: 50257);
        Assert.Equal(tokens.Length, r.TokenCount);
        var back = new int[tokens.Length];
        r.Read(0, back);
        Assert.Equal(tokens, back);
        Assert.False(File.Exists(path + ".tmp"));
    }

    [Fact]
    public void Version2HoldsLargeVocabularies()
    {
        Assert.Equal(1, ShardFormat.VersionFor(65536));
        Assert.Equal(2, ShardFormat.VersionFor(100277));
        using var dir = new TempDir();
        int[] tokens = [0, 65535, 65536, 100257, 199999];
        var path = Write(dir, "b.bin", ShardFormat.VersionFor(200019), tokens);
        Assert.Equal(1024 + tokens.Length * 4, new FileInfo(path).Length);
        using var r = ShardReader.Open(path, 200019);
        Assert.Equal(2, r.Version);
        Assert.Equal(199999, r[4]);
        Assert.Throws<ArgumentOutOfRangeException>(() => Write(dir, "c.bin", 1, [65536]));
    }

    [Fact]
    public void UncommittedWriterLeavesNothing()
    {
        using var dir = new TempDir();
        using (var w = new ShardWriter(dir["x.bin"], 1)) w.Write([1, 2, 3]);
        Assert.Empty(Directory.GetFiles(dir.Path));
    }

    [Fact]
    public void CorruptShardsAreRejectedNamingTheFile()
    {
        using var dir = new TempDir();
        var good = File.ReadAllBytes(Write(dir, "good.bin", 1, [1, 2, 3, 4]));

        var magic = (byte[])good.Clone();
        BinaryPrimitives.WriteInt32LittleEndian(magic, 12345);
        File.WriteAllBytes(dir["magic.bin"], magic);
        var e = Assert.Throws<BadInputException>(() => ShardReader.Open(dir["magic.bin"]));
        Assert.Contains("magic.bin", e.Message);
        Assert.Contains("expected 20240520", e.Message);

        File.WriteAllBytes(dir["short.bin"], good[..^2]);
        e = Assert.Throws<BadInputException>(() => ShardReader.Open(dir["short.bin"]));
        Assert.Contains("short.bin is truncated", e.Message);
        Assert.Contains("expected 1032", e.Message);

        File.WriteAllBytes(dir["header.bin"], good[..100]);
        Assert.Contains("header.bin is truncated", Assert.Throws<BadInputException>(() => ShardReader.Open(dir["header.bin"])).Message);

        var version = (byte[])good.Clone();
        BinaryPrimitives.WriteInt32LittleEndian(version.AsSpan(4), 7);
        File.WriteAllBytes(dir["version.bin"], version);
        Assert.Contains("version 7", Assert.Throws<BadInputException>(() => ShardReader.Open(dir["version.bin"])).Message);

        e = Assert.Throws<BadInputException>(() => ShardReader.Open(dir["good.bin"], vocabSize: 4));
        Assert.Contains("token 4 at position 3", e.Message);
        Assert.Contains("below vocab size 4", e.Message);

        Assert.Contains("does not exist", Assert.Throws<BadInputException>(() => ShardReader.Open(dir["none.bin"])).Message);
    }

    [Theory]
    [InlineData(ShardFormat.VersionUInt16)]
    [InlineData(ShardFormat.VersionUInt32)]
    public void Encoded_writes_give_the_same_shard_as_token_writes(int version)
    {
        // prepare's spill and pass 2 move encoded bytes; the shard must not depend on which path wrote it.
        using var dir = new TempDir();
        int[] tokens = [0, 1, 255, 256, 50256, 65535];
        string a = Write(dir, "a.bin", version, tokens);
        int width = ShardFormat.TokenWidth(version);
        var bytes = new byte[tokens.Length * width];
        ShardFormat.Encode(tokens, bytes, width);
        using (var w = new ShardWriter(dir["b.bin"], version))
        {
            w.WriteEncoded(bytes.AsSpan(0, 2 * width));
            w.WriteEncoded(bytes.AsSpan(2 * width));
            Assert.Equal(tokens.Length, w.TokenCount);
            Assert.Throws<ArgumentException>(() => w.WriteEncoded(new byte[width + 1]));
            w.Commit();
        }
        Assert.Equal(File.ReadAllBytes(a), File.ReadAllBytes(dir["b.bin"]));
        Assert.Equal(65535, BinaryPrimitives.ReadUInt16LittleEndian(bytes.AsSpan(5 * width)));
    }

    [Fact]
    public void Encode_refuses_tokens_the_width_cannot_hold()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => ShardFormat.Encode([1, 65536], new byte[4], 2));
        Assert.Throws<ArgumentOutOfRangeException>(() => ShardFormat.Encode([-1], new byte[2], 2));
        Assert.Throws<ArgumentOutOfRangeException>(() => ShardFormat.Encode([-1], new byte[4], 4));
        Assert.Throws<ArgumentException>(() => ShardFormat.Encode([1, 2], new byte[3], 2));
        var wide = new byte[4];
        ShardFormat.Encode([70000], wide, 4);
        Assert.Equal(70000, BinaryPrimitives.ReadInt32LittleEndian(wide));
    }
}
