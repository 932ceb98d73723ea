using System.Text.Json;
using System.Text.Json.Serialization;

namespace Supercluster.Data;

/// <summary>One shard file (relative to the data folder) and its token count.</summary>
public sealed record ShardInfo(
    [property: JsonPropertyName("file")] string File,
    [property: JsonPropertyName("tokens")] long Tokens);

/// <summary>
/// <c>meta.json</c> of a prepared data folder: which tokenizer made the shards and what each split holds.
/// Written last by <see cref="Preparer"/>, so its presence means the folder is complete.
/// </summary>
public sealed record DatasetMeta(
    [property: JsonPropertyName("tokenizer")] string Tokenizer,
    [property: JsonPropertyName("vocab_size")] int VocabSize,
    [property: JsonPropertyName("eot")] int EotToken,
    [property: JsonPropertyName("train_tokens")] long TrainTokens,
    [property: JsonPropertyName("val_tokens")] long ValTokens)
{
    public const string FileName = "meta.json";

    /// <summary>Bytes per token in the shards (2 = llm.c version 1, 4 = version 2).</summary>
    [JsonPropertyName("token_width")] public int TokenWidth { get; init; } = 2;
    [JsonPropertyName("train_documents")] public long TrainDocuments { get; init; }
    [JsonPropertyName("val_documents")] public long ValDocuments { get; init; }
    [JsonPropertyName("train_shards")] public IReadOnlyList<ShardInfo> TrainShards { get; init; } = [];
    [JsonPropertyName("val_shards")] public IReadOnlyList<ShardInfo> ValShards { get; init; } = [];
    /// <summary>Where the text came from (input paths or sample name), for humans.</summary>
    [JsonPropertyName("source")] public string? Source { get; init; }
    /// <summary>Documents read, removed per stage, duplicates found, PII replaced (absent in folders from older versions).</summary>
    [JsonPropertyName("pipeline")] public Pipeline.PipelineReport? Pipeline { get; init; }
    /// <summary>Packed chat conversations with loss masks (<c>prepare --format chat</c>); null for plain text.</summary>
    [JsonPropertyName("chat"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public ChatDataInfo? Chat { get; init; }

    /// <summary>Shards of <c>train</c> or <c>val</c>.</summary>
    public IReadOnlyList<ShardInfo> Shards(string split) => split switch
    {
        "train" => TrainShards,
        "val" => ValShards,
        _ => throw new BadInputException($"unknown split '{split}'; expected train or val"),
    };

    static readonly JsonSerializerOptions Json = new() { WriteIndented = true };

    /// <summary>Reads <c>dataDir/meta.json</c>; a missing folder or file is bad input.</summary>
    public static DatasetMeta Load(string dataDir)
    {
        if (!Directory.Exists(dataDir)) throw new BadInputException($"data folder {dataDir} does not exist; create it with `supercluster prepare`");
        var path = Path.Combine(dataDir, FileName);
        if (!System.IO.File.Exists(path)) throw new BadInputException($"{path} is missing; {dataDir} is not a prepared data folder (run `supercluster prepare`)");
        try
        {
            return JsonSerializer.Deserialize<DatasetMeta>(System.IO.File.ReadAllText(path), Json)
                ?? throw new BadInputException($"{path} is empty");
        }
        catch (JsonException e)
        {
            throw new BadInputException($"{path} is not valid dataset metadata ({e.Message.Split('.')[0]})");
        }
    }

    /// <summary>
    /// Serialises a meta.json with every kind of field to nowhere: the first serialisation in a process JITs
    /// System.Text.Json's generic code over these types (~0.1 s), which <c>prepare</c> runs on an idle core meanwhile.
    /// </summary>
    public static void WarmUp()
    {
        var meta = new DatasetMeta("gpt2", 50257, 50256, 1, 1)
        {
            TrainShards = [new ShardInfo("train_000000.bin", 1)],
            ValShards = [new ShardInfo("val_000000.bin", 1)],
            Source = "warm-up",
            Pipeline = new Pipeline.PipelineReport
            {
                Removed = new(StringComparer.Ordinal) { ["empty"] = new(1, 1), ["dedup_exact"] = new(1, 1, 1) },
                NearDuplicatesFound = 0,
                PiiReplaced = new(StringComparer.Ordinal) { ["email"] = 0 },
                Near = new(0.8, 5, 128, 16, 8),
                FilterThresholds = new(StringComparer.Ordinal) { ["min_words"] = 1 },
            },
        };
        JsonSerializer.Serialize(Stream.Null, meta, DatasetMetaJson.Default.DatasetMeta);
    }

    /// <summary>Writes <c>dataDir/meta.json</c> via a temp file and rename.</summary>
    public void Save(string dataDir)
    {
        var path = Path.Combine(dataDir, FileName);
        var temp = path + ".tmp";
        using (var f = new FileStream(temp, FileMode.Create, FileAccess.Write))
        {
            JsonSerializer.Serialize(f, this, DatasetMetaJson.Default.DatasetMeta); // source-generated: no reflection warm-up (~0.1 s) in prepare
            f.Flush(flushToDisk: true);
        }
        System.IO.File.Move(temp, path, overwrite: true);
    }
}

/// <summary>Compile-time JSON metadata for writing meta.json (byte-identical to the reflection serializer's output: compared on SOTU and a near-dedup run).</summary>
[JsonSourceGenerationOptions(WriteIndented = true)]
[JsonSerializable(typeof(DatasetMeta))]
internal sealed partial class DatasetMetaJson : JsonSerializerContext;
