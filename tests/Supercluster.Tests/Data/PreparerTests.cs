using System.Text;
using System.Text.Json;
using Supercluster.Data;

namespace Supercluster.Tests.Data;

public class PreparerTests
{
    static List<int> ReadAll(string dir, IEnumerable<ShardInfo> shards)
    {
        var all = new List<int>();
        foreach (var s in shards)
        {
            using var r = ShardReader.Open(Path.Combine(dir, s.File));
            Assert.Equal(s.Tokens, r.TokenCount);
            var buf = new int[r.TokenCount];
            r.Read(0, buf);
            all.AddRange(buf);
        }
        return all;
    }

    [Fact]
    public void StreamsACorpusLargerThanItsMemoryBound()
    {
        using var dir = new TempDir();
        // ~40 MB of JSONL; the preparer may hold only 1 M characters of text (plus one document) at a time.
        var rng = new Random(1);
        long expectedTokens = 0, docs = 0;
        int longest = 0;
        var words = new[] { "alpha", "beta", "gamma", "délta", "日本", "🎉", "x", "the" };
        using (var w = new StreamWriter(dir["corpus.jsonl"], false, new UTF8Encoding(false)))
        {
            var sb = new StringBuilder();
            while (w.BaseStream.Position < 40_000_000)
            {
                sb.Clear();
                int n = rng.Next(50, 2000);
                for (int i = 0; i < n; i++) sb.Append(words[rng.Next(words.Length)]).Append(' ');
                var text = sb.ToString();
                w.Write("{\"text\":");
                w.Write(JsonSerializer.Serialize(text));
                w.Write(",\"id\":" + docs + "}\n");
                expectedTokens += Encoding.UTF8.GetByteCount(text) + 1; // byte tokenizer: one token per byte + EOT
                longest = Math.Max(longest, text.Length);
                docs++;
            }
        }
        const long Budget = 1 << 20;
        var result = Preparer.Run(CorpusReader.Read([dir["corpus.jsonl"]]),
            new PrepareOptions { OutDir = dir["out"], Tokenizer = "byte", ShardTokens = 10_000_000, ChunkChars = Budget, ValFraction = 0.01 });
        Assert.InRange(result.PeakChunkChars, 1, Budget + longest);
        Assert.Equal(docs, result.Documents);
        Assert.Equal(expectedTokens, result.Tokens);
        var meta = DatasetMeta.Load(dir["out"]);
        Assert.Equal(result.Meta.TrainTokens, meta.TrainTokens);
        Assert.True(meta.TrainShards.Count >= 3);
        Assert.All(meta.TrainShards.SkipLast(1), s => Assert.Equal(10_000_000, s.Tokens));
        Assert.Equal(meta.TrainTokens, meta.TrainShards.Sum(s => s.Tokens));
        Assert.Equal(docs / 100, meta.ValDocuments);
        Assert.Equal(2, meta.TokenWidth);
        using var first = ShardReader.Open(Path.Combine(dir["out"], "train_000000.bin"), 257);
        Assert.NotEqual('{', first[0]); // the text field, not the raw JSON line
    }

    /// <summary>
    /// Deduplication compacts the shards rank 0 wrote in pass 1 in place (removed documents leave, later ones move up,
    /// across shard files). Reference: the kept documents' bytes + EOT, split by input id, cut into shards of S tokens,
    /// computed here from the texts. Removals at the start, in runs, of val documents, spanning shards, and the last one.
    /// </summary>
    [Theory]
    [InlineData(300, 0.1, 97, 1)]
    [InlineData(300, 0.1, 97, 3)]
    [InlineData(300, 0.0, 211, 2)]
    [InlineData(8, 0.25, 5, 2)]   // every val document (ids 3, 7) is a duplicate: the last kept one moves to val
    public void DedupCompactsTheShardsToTheKeptDocuments(int count, double fraction, int shardTokens, int threads)
    {
        var rng = new Random(count + shardTokens);
        var texts = new List<string>();
        for (int i = 0; i < count; i++)
        {
            bool duplicate = i > 0 && (i is 1 or 2 || i == count - 1 || (count > 8 ? rng.Next(4) == 0 || i % 10 == 9 && rng.Next(2) == 0 : i is 3 or 7));
            texts.Add(i % 23 == 11 ? " \n" // empty after trimming: removed in pass 1, never in the shards
                : duplicate ? texts[rng.Next(i)] is var t && !string.IsNullOrWhiteSpace(t) ? t : "doc 0 unique"
                : $"doc {i} unique " + new string((char)('a' + i % 26), rng.Next(1, 3 * shardTokens)));
        }
        var seen = new HashSet<string>();
        var (train, val) = (new List<int>(), new List<int>());
        var kept = new List<(int Id, List<int> Tokens)>();
        for (int i = 0; i < count; i++)
        {
            if (string.IsNullOrWhiteSpace(texts[i]) || !seen.Add(texts[i])) continue;
            kept.Add((i, [.. Encoding.UTF8.GetBytes(texts[i]).Select(b => (int)b), 256]));
        }
        bool fallback = fraction > 0 && kept.Count >= 2 && !kept.Any(k => Preparer.IsVal(k.Id, fraction));
        for (int k = 0; k < kept.Count; k++)
            (fraction > 0 && Preparer.IsVal(kept[k].Id, fraction) || fallback && k == kept.Count - 1 ? val : train).AddRange(kept[k].Tokens);
        Assert.True(kept.Count < count - 3, "the corpus has duplicates to remove");
        Assert.Equal(count == 8, fallback);

        using var dir = new TempDir();
        var meta = Preparer.Run(texts.Select(t => new Document(t)).ToList(), new PrepareOptions
        {
            OutDir = dir.Path, Tokenizer = "byte", ShardTokens = shardTokens, ValFraction = fraction, Dedup = DedupMode.Exact, Threads = threads, ChunkChars = 2000,
        }).Meta;
        Assert.Equal(train, ReadAll(dir.Path, meta.TrainShards));
        Assert.Equal(val, ReadAll(dir.Path, meta.ValShards));
        Assert.All(meta.TrainShards.SkipLast(1).Concat(meta.ValShards.SkipLast(1)), s => Assert.Equal(shardTokens, s.Tokens));
        Assert.Equal((train.Count + shardTokens - 1) / shardTokens, meta.TrainShards.Count);
        Assert.Equal(kept.Count, meta.TrainDocuments + meta.ValDocuments);
        Assert.Equal(val.Count(t => t == 256), meta.ValDocuments);
        Assert.Equal(["meta.json", .. meta.TrainShards.Concat(meta.ValShards).Select(s => s.File)], Directory.GetFiles(dir.Path).Select(Path.GetFileName).Order(StringComparer.Ordinal));
    }

    [Fact]
    public void ValSplitIsDeterministicAndNeverEmpty()
    {
        // F = 0.25: docs 3, 7, 11 … are val.
        Assert.Equal([3L, 7L, 11L], Enumerable.Range(0, 12).Where(i => Preparer.IsVal(i, 0.25)).Select(i => (long)i));
        using var dir = new TempDir();
        var docs = Enumerable.Range(0, 5).Select(i => new Document($"doc {i}")).ToList();
        var meta = Preparer.Run(docs, new PrepareOptions { OutDir = dir["a"], Tokenizer = "byte", ValFraction = 0.05 }).Meta;
        Assert.Equal(1, meta.ValDocuments); // 5 docs at 5% would give none; the last one moves to val
        Assert.Equal(4, meta.TrainDocuments);
        var val = ReadAll(dir["a"], meta.ValShards);
        Assert.Equal("doc 4", Encoding.UTF8.GetString(val.SkipLast(1).Select(t => (byte)t).ToArray()));
        Assert.Equal(256, val[^1]);
        var none = Preparer.Run(docs, new PrepareOptions { OutDir = dir["b"], Tokenizer = "byte", ValFraction = 0 }).Meta;
        Assert.Equal(0, none.ValDocuments);
        Assert.Empty(none.ValShards);
        Assert.Equal(5 * 6, none.TrainTokens);
    }

    [Fact]
    public void OutputIsIndependentOfThreadCount()
    {
        using var dir = new TempDir();
        var docs = Enumerable.Range(0, 300).Select(i => new Document($"Document {i}: " + new string('a', i % 37) + " ünïcode 🎉")).ToList();
        var one = Preparer.Run(docs, new PrepareOptions { OutDir = dir["1"], Tokenizer = "gpt2", Threads = 1, ChunkChars = 500 }).Meta;
        var many = Preparer.Run(docs, new PrepareOptions { OutDir = dir["n"], Tokenizer = "gpt2", Threads = 8, ChunkChars = 5000 }).Meta;
        Assert.Equal(ReadAll(dir["1"], one.TrainShards), ReadAll(dir["n"], many.TrainShards));
        Assert.Equal(ReadAll(dir["1"], one.ValShards), ReadAll(dir["n"], many.ValShards));
    }

    [Fact]
    public void OneRankWithoutDedupWritesTheShardsPassTwoWould()
    {
        // --dedup none on one rank writes shards during pass 1; --dedup exact on text without duplicates goes through the
        // spill and pass 2. Same documents kept, so the shard files must be the same bytes: several shards per split, a
        // document split across shards, documents removed in pass 1 (empty), and val sizes where the last document moves.
        foreach (var (count, fraction) in new[] { (400, 0.1), (5, 0.05), (1, 0.5) })
        {
            using var dir = new TempDir();
            var docs = Enumerable.Range(0, count).Select(i => new Document(i % 7 == 3 ? " \n" : $"Document {i}: " + new string('a', i % 37) + string.Concat(Enumerable.Repeat(" ünïcode 🎉", i % 5)))).ToList();
            var options = new PrepareOptions { OutDir = dir["none"], Tokenizer = "gpt2", ShardTokens = 997, ValFraction = fraction, ChunkChars = 3000, Threads = 3 };
            var direct = Preparer.Run(docs, options).Meta;
            var passTwo = Preparer.Run(docs, options with { OutDir = dir["exact"], Dedup = DedupMode.Exact }).Meta;
            Assert.Equal(0, passTwo.Pipeline!.ExactDuplicatesFound);
            Assert.True(count < 400 || direct.TrainShards.Count >= 3, $"{direct.TrainShards.Count} train shards");
            var files = Directory.GetFiles(dir["none"], "*.bin").Select(Path.GetFileName).Order().ToList();
            Assert.Equal(files, Directory.GetFiles(dir["exact"], "*.bin").Select(Path.GetFileName).Order());
            Assert.Equal(direct.TrainShards.Count + direct.ValShards.Count, files.Count);
            foreach (var f in files) Assert.True(File.ReadAllBytes(Path.Combine(dir["none"], f!)).AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(dir["exact"], f!))), $"{count} docs: {f} differs");
            Assert.Equal((direct.TrainDocuments, direct.ValDocuments, direct.TrainTokens, direct.ValTokens), (passTwo.TrainDocuments, passTwo.ValDocuments, passTwo.TrainTokens, passTwo.ValTokens));
            Assert.True(count == 1 || direct.ValDocuments > 0); // one document stays in train
        }
    }

    [Fact]
    public void FailuresLeaveNoPartialOutput()
    {
        using var dir = new TempDir();
        var e = Assert.Throws<BadInputException>(() => Preparer.Run([], new PrepareOptions { OutDir = dir["empty"], Tokenizer = "byte" }));
        Assert.Contains("corpus is empty", e.Message);
        Assert.False(Directory.Exists(dir["empty"]));

        // A previous dataset survives a run that fails half-way (bad line after a full shard was written).
        Preparer.Run([new Document("old")], new PrepareOptions { OutDir = dir["out"], Tokenizer = "byte", ValFraction = 0 });
        var before = Directory.GetFileSystemEntries(dir["out"]).Order().ToArray();
        File.WriteAllLines(dir["c.jsonl"], [.. Enumerable.Repeat("{\"text\":\"0123456789\"}", 50), "{bad"]);
        e = Assert.Throws<BadInputException>(() => Preparer.Run(CorpusReader.Read([dir["c.jsonl"]]),
            new PrepareOptions { OutDir = dir["out"], Tokenizer = "byte", ShardTokens = 20, ChunkChars = 30 }));
        Assert.Contains("c.jsonl:51: malformed JSON", e.Message);
        Assert.Equal(before, Directory.GetFileSystemEntries(dir["out"]).Order().ToArray());
        Assert.Equal(4, DatasetMeta.Load(dir["out"]).TrainTokens);
    }

    [Theory]
    [InlineData(1.0, 100L, "--val-fraction")]
    [InlineData(-0.1, 100L, "--val-fraction")]
    [InlineData(0.1, 0L, "--shard-tokens")]
    public void BadOptionsAreBadInput(double val, long shard, string named)
    {
        using var dir = new TempDir();
        var e = Assert.Throws<BadInputException>(() => Preparer.Run([new Document("x")], new PrepareOptions { OutDir = dir["o"], Tokenizer = "byte", ValFraction = val, ShardTokens = shard }));
        Assert.Contains(named, e.Message);
    }

    [Fact]
    public void SotuSamplePreparesToReferenceTokenCount()
    {
        var docs = SampleCorpora.Open("sotu").ToList();
        Assert.Equal(233, docs.Count);
        Assert.Equal("1790", docs[0].Metadata!["year"]);
        Assert.Equal("George Washington", docs[0].Metadata!["name"]);
        Assert.Equal("2021", docs[^1].Metadata!["year"]); // package 0.2.3 runs to 2021
        Assert.False(string.IsNullOrEmpty(docs[^1].Metadata!["party"]));
        using var dir = new TempDir();
        var meta = Preparer.Run(docs, new PrepareOptions { OutDir = dir.Path, Tokenizer = "gpt2" }).Meta;
        // 2,074,301 = Σ(len(tiktoken gpt2 encode_ordinary(text)) + 1) over the 233 addresses, computed with npm tiktoken 1.0.22 under node.
        Assert.Equal(2_074_301, meta.TrainTokens + meta.ValTokens);
        Assert.Equal(11, meta.ValDocuments);
        Assert.Equal([37, 5037, 12, 34, 34100, 286, 262, 3845], ReadAll(dir.Path, meta.TrainShards).Take(8));
        // Byte-identical shards to those of main at a7a62f1 (before the load-time work of issue 14: lazy reference
        // tokenizer, cached encoder tables, ramped read chunks): speed changes must not change a byte.
        Assert.Equal("4a899b088c65d42612e24bebba53c38e496e5feb2a11fb10961474d34904404e", Sha256(dir["train_000000.bin"]));
        Assert.Equal("426af4a47c2c5c1b94f2d4b06b630348ded3c6119bfd3592ee101ebccada4474", Sha256(dir["val_000000.bin"]));
        Assert.Contains("unknown sample 'enron'", Assert.Throws<BadInputException>(() => SampleCorpora.Open("enron")).Message);
    }

    static string Sha256(string path) => Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(File.ReadAllBytes(path)));
}
