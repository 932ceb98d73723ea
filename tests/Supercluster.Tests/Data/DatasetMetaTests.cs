using System.Text.Json;
using Supercluster.Data;
using Supercluster.Data.Pipeline;

namespace Supercluster.Tests.Data;

public class DatasetMetaTests
{
    static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    static IEnumerable<DatasetMeta> Metas()
    {
        yield return new DatasetMeta("byte", 257, 256, 0, 0);
        yield return new DatasetMeta("gpt2", 50257, 50256, 1_975_599, 98_702)
        {
            TrainDocuments = 222, ValDocuments = 11, Source = "sample:sotu",
            TrainShards = [new("train_000000.bin", 1_975_599)], ValShards = [new("val_000000.bin", 98_702)],
            Pipeline = new PipelineReport { DocumentsRead = 233, DocumentsKept = 233 },
        };
        yield return new DatasetMeta("o200k", 200_019, 199_999, 5_000_000_000, 7)
        {
            TokenWidth = 4, TrainDocuments = 3, ValDocuments = 1,
            Source = "/data/d\u00e9j\u00e0 vu/<posts> & \"more\" + 'x'.jsonl, C:\\tmp\\\u65e5\u672c.txt \ud83c\udf89",
            TrainShards = [new("train_000000.bin", 100), new("train_000001.bin", 3)], ValShards = [],
            Pipeline = new PipelineReport
            {
                DocumentsRead = 10, DocumentsKept = 4, ExactDuplicatesFound = 2, NearDuplicatesFound = 1, Dedup = "near",
                Removed = new(StringComparer.Ordinal)
                {
                    ["dedup_exact"] = new(2, 40, 12), ["empty"] = new(1, 3), ["fields:lang"] = new(1, 9),
                    ["filter:mean_word_length"] = new(1, 5), ["dedup_near"] = new(1, 20, 7),
                },
                PiiReplaced = new(StringComparer.Ordinal) { ["email"] = 3, ["ip"] = 0, ["phone"] = 12 },
                Near = new(0.7000000000000001, 5, 128, 14, 9),
                FilterThresholds = new(StringComparer.Ordinal) { ["min_words"] = 50, ["max_symbol_ratio"] = 0.1, ["tiny"] = 1e-7, ["big"] = 1.5e300 },
            },
            Chat = new ChatDataInfo { SeqLen = 1024, Conversations = 5, Truncated = 1, Dropped = 2, Sequences = 3, TrainedTokens = 4000 },
        };
    }

    [Fact]
    public void WriterGivesTheSerializersBytes()
    {
        // The serializer (reflection, the attributes' names and order) is the reference for the hand-written writer.
        foreach (var meta in Metas())
        {
            var expected = JsonSerializer.SerializeToUtf8Bytes(meta, Indented);
            var ms = new MemoryStream();
            meta.Write(ms);
            Assert.Equal(System.Text.Encoding.UTF8.GetString(expected), System.Text.Encoding.UTF8.GetString(ms.ToArray()));
        }
    }

    [Fact]
    public void SavedMetaLoadsBack()
    {
        using var dir = new TempDir();
        var meta = Metas().Last();
        Directory.CreateDirectory(dir["d"]);
        meta.Save(dir["d"]);
        var back = DatasetMeta.Load(dir["d"]);
        Assert.Equal(JsonSerializer.Serialize(meta, Indented), JsonSerializer.Serialize(back, Indented));
        Assert.Equal(JsonSerializer.SerializeToUtf8Bytes(meta, Indented), File.ReadAllBytes(Path.Combine(dir["d"], DatasetMeta.FileName)));
    }
}
