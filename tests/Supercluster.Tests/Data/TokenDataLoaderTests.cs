using Supercluster.Data;

namespace Supercluster.Tests.Data;

public class TokenDataLoaderTests
{
    const int Vocab = 1000;

    /// <summary>Shards whose token at global offset g is g % 997, so every window is recognisable.</summary>
    static string MakeDataset(TempDir dir, params int[] shardTokens)
    {
        var shards = new List<ShardInfo>();
        long g = 0;
        for (int s = 0; s < shardTokens.Length; s++)
        {
            var name = $"train_{s:D6}.bin";
            using var w = new ShardWriter(dir[name], 1);
            w.Write(Enumerable.Range(0, shardTokens[s]).Select(i => (int)((g + i) % 997)).ToArray());
            w.Commit();
            g += shardTokens[s];
            shards.Add(new ShardInfo(name, shardTokens[s]));
        }
        new DatasetMeta("byte", Vocab, 999, g, 0) { TrainShards = shards }.Save(dir.Path);
        return dir.Path;
    }

    static (long[] X, long[] Y) Next(TokenDataLoader l, int b, int t)
    {
        var x = new long[b * t];
        var y = new long[b * t];
        l.NextBatch(x, y);
        return (x, y);
    }

    [Fact]
    public void BatchesAreContiguousShiftedWindows()
    {
        using var dir = new TempDir();
        using var l = new TokenDataLoader(MakeDataset(dir, 500), "train", 2, 8);
        Assert.Equal(500, l.TokensPerEpoch);
        Assert.Equal("byte", l.Meta.Tokenizer);
        var (x, y) = Next(l, 2, 8);
        Assert.Equal(Enumerable.Range(0, 16).Select(i => (long)i), x);
        Assert.Equal(Enumerable.Range(1, 16).Select(i => (long)i), y);
        Assert.Equal(new DataLoaderState(0, 0, 16), l.State);
        (x, _) = Next(l, 2, 8);
        Assert.Equal(16, x[0]);
    }

    [Fact]
    public void OneRankWithDoubleBatchEqualsTwoRanks()
    {
        using var dir = new TempDir();
        var data = MakeDataset(dir, 300, 170, 260);
        using var whole = new TokenDataLoader(data, "train", 4, 10, seed: 3);
        using var r0 = new TokenDataLoader(data, "train", 2, 10, rank: 0, worldSize: 2, seed: 3);
        using var r1 = new TokenDataLoader(data, "train", 2, 10, rank: 1, worldSize: 2, seed: 3);
        for (int step = 0; step < 40; step++) // crosses shards and epochs
        {
            var (x, y) = Next(whole, 4, 10);
            var (x0, y0) = Next(r0, 2, 10);
            var (x1, y1) = Next(r1, 2, 10);
            Assert.Equal(x, x0.Concat(x1));
            Assert.Equal(y, y0.Concat(y1));
            Assert.Equal(whole.State, r0.State);
            Assert.Equal(whole.State, r1.State);
        }
    }

    [Fact]
    public void StateRestoreContinuesIdentically()
    {
        using var dir = new TempDir();
        var data = MakeDataset(dir, 120, 90, 200, 75);
        using var a = new TokenDataLoader(data, "train", 2, 7, seed: 11);
        for (int i = 0; i < 13; i++) Next(a, 2, 7);
        var saved = a.State;
        var expected = Enumerable.Range(0, 30).Select(_ => Next(a, 2, 7).X).ToList();
        using var b = new TokenDataLoader(data, "train", 2, 7, seed: 11);
        b.Restore(saved);
        Assert.Equal(saved, b.State);
        foreach (var x in expected) Assert.Equal(x, Next(b, 2, 7).X);
        Assert.Throws<BadInputException>(() => b.Restore(new DataLoaderState(0, 9, 0)));
    }

    [Fact]
    public void EpochsWrapWithDeterministicShuffleAndResetReturnsToStart()
    {
        using var dir = new TempDir();
        var data = MakeDataset(dir, 50, 50, 50, 50, 50, 50, 50, 50, 10); // last shard too small: skipped
        using var l = new TokenDataLoader(data, "train", 1, 40, seed: 5);
        var firsts = new List<long>();
        for (int i = 0; i < 8 * 5; i++)
        {
            if (l.State.Position == 0) firsts.Add(l.State.Epoch);
            var (x, _) = Next(l, 1, 40);
            Assert.Equal(x[0] + 39, x[39] < x[0] ? x[39] + 997 : x[39]); // one contiguous window
        }
        Assert.Equal(5, l.State.Epoch);
        Assert.Equal(40, firsts.Count); // one batch per shard: every batch starts a shard
        // Shard order per epoch: epoch 0 sorted, later epochs permutations that differ from it and each other.
        var orders = new List<long[]>();
        l.Reset();
        Assert.Equal(new DataLoaderState(0, 0, 0), l.State);
        for (int e = 0; e < 3; e++)
            orders.Add(Enumerable.Range(0, 8).Select(_ => Next(l, 1, 40).X[0] / 50).ToArray());
        Assert.Equal([0L, 1, 2, 3, 4, 5, 6, 7], orders[0]);
        Assert.Equal([0L, 1, 2, 3, 4, 5, 6, 7], orders[1].Order());
        Assert.NotEqual(orders[0], orders[1]);
        Assert.NotEqual(orders[1], orders[2]);
        using var again = new TokenDataLoader(data, "train", 1, 40, seed: 5);
        again.Restore(new DataLoaderState(1, 0, 0));
        Assert.Equal(orders[1], Enumerable.Range(0, 8).Select(_ => Next(again, 1, 40).X[0] / 50));
        using var otherSeed = new TokenDataLoader(data, "train", 1, 40, seed: 6);
        otherSeed.Restore(new DataLoaderState(1, 0, 0));
        Assert.NotEqual(orders[1], Enumerable.Range(0, 8).Select(_ => Next(otherSeed, 1, 40).X[0] / 50).ToArray());
    }

    [Fact]
    public void BadDataIsBadInput()
    {
        using var dir = new TempDir();
        var data = MakeDataset(dir, 100, 60);
        var e = Assert.Throws<BadInputException>(() => new TokenDataLoader(data, "train", 4, 25, worldSize: 2));
        Assert.Contains("train split", e.Message);
        Assert.Contains("160 tokens", e.Message);
        Assert.Contains("= 201", e.Message);
        Assert.Contains("no val shards", Assert.Throws<BadInputException>(() => new TokenDataLoader(data, "val", 1, 4)).Message);
        Assert.Contains("unknown split 'test'", Assert.Throws<BadInputException>(() => new TokenDataLoader(data, "test", 1, 4)).Message);
        Assert.Contains("does not exist", Assert.Throws<BadInputException>(() => new TokenDataLoader(dir["nope"], "train", 1, 4)).Message);
        File.Delete(Path.Combine(data, "meta.json"));
        Assert.Contains("meta.json is missing", Assert.Throws<BadInputException>(() => new TokenDataLoader(data, "train", 1, 4)).Message);
    }

    [Fact]
    public void TokensBeyondTheVocabularyAreBadInput()
    {
        using var dir = new TempDir();
        using (var w = new ShardWriter(dir["train_000000.bin"], 1)) { w.Write([1, 2, 3, 4000, 5]); w.Commit(); }
        new DatasetMeta("byte", Vocab, 999, 5, 0) { TrainShards = [new ShardInfo("train_000000.bin", 5)] }.Save(dir.Path);
        using var l = new TokenDataLoader(dir.Path, "train", 1, 4);
        var e = Assert.Throws<BadInputException>(() => Next(l, 1, 4));
        Assert.Contains("token 4000 at position 3", e.Message);
    }
}
