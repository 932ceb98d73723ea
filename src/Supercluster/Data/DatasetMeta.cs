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

    /// <summary>Writes <c>dataDir/meta.json</c> via a temp file and rename.</summary>
    public void Save(string dataDir)
    {
        var path = Path.Combine(dataDir, FileName);
        var temp = path + ".tmp";
        using (var f = new FileStream(temp, FileMode.Create, FileAccess.Write))
        {
            Write(f);
            f.Flush(flushToDisk: true);
        }
        System.IO.File.Move(temp, path, overwrite: true);
    }

    /// <summary>
    /// meta.json's bytes, written field by field with <see cref="Utf8JsonWriter"/>: System.Text.Json's serializer costs
    /// 0.1–0.2 s of JIT on its first use in a process (even source-generated), a fifth of a small <c>prepare</c>. The
    /// names and order are the <c>JsonPropertyName</c> attributes' (read back by <see cref="Load"/>);
    /// <c>DatasetMetaTests</c> checks the bytes equal the serializer's for every kind of field.
    /// </summary>
    public void Write(Stream stream)
    {
        using var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true });
        w.WriteStartObject();
        w.WriteString("tokenizer", Tokenizer);
        w.WriteNumber("vocab_size", VocabSize);
        w.WriteNumber("eot", EotToken);
        w.WriteNumber("train_tokens", TrainTokens);
        w.WriteNumber("val_tokens", ValTokens);
        w.WriteNumber("token_width", TokenWidth);
        w.WriteNumber("train_documents", TrainDocuments);
        w.WriteNumber("val_documents", ValDocuments);
        foreach (var (name, shards) in new[] { ("train_shards", TrainShards), ("val_shards", ValShards) })
        {
            w.WriteStartArray(name);
            foreach (var s in shards)
            {
                w.WriteStartObject();
                w.WriteString("file", s.File);
                w.WriteNumber("tokens", s.Tokens);
                w.WriteEndObject();
            }
            w.WriteEndArray();
        }
        w.WriteString("source", Source);
        if (Pipeline is not { } p) w.WriteNull("pipeline");
        else
        {
            w.WriteStartObject("pipeline");
            w.WriteNumber("documents_read", p.DocumentsRead);
            w.WriteNumber("documents_kept", p.DocumentsKept);
            w.WriteStartObject("removed");
            foreach (var (stage, c) in p.Removed)
            {
                w.WriteStartObject(stage);
                w.WriteNumber("documents", c.Documents);
                w.WriteNumber("characters", c.Characters);
                Number(w, "tokens", c.Tokens);
                w.WriteEndObject();
            }
            w.WriteEndObject();
            w.WriteNumber("exact_duplicates_found", p.ExactDuplicatesFound);
            Number(w, "near_duplicates_found", p.NearDuplicatesFound);
            if (p.PiiReplaced is null) w.WriteNull("pii_replaced");
            else
            {
                w.WriteStartObject("pii_replaced");
                foreach (var (kind, n) in p.PiiReplaced) w.WriteNumber(kind, n);
                w.WriteEndObject();
            }
            w.WriteString("dedup", p.Dedup);
            if (p.Near is not { } near) w.WriteNull("near");
            else
            {
                w.WriteStartObject("near");
                w.WriteNumber("threshold", near.Threshold);
                w.WriteNumber("ngram", near.Ngram);
                w.WriteNumber("permutations", near.Permutations);
                w.WriteNumber("bands", near.Bands);
                w.WriteNumber("rows", near.Rows);
                w.WriteEndObject();
            }
            if (p.FilterThresholds is null) w.WriteNull("filter");
            else
            {
                w.WriteStartObject("filter");
                foreach (var (rule, v) in p.FilterThresholds) w.WriteNumber(rule, v);
                w.WriteEndObject();
            }
            w.WriteEndObject();
        }
        if (Chat is { } chat) // omitted when null
        {
            w.WriteStartObject("chat");
            w.WriteNumber("seq_len", chat.SeqLen);
            w.WriteNumber("loss_mask_version", chat.LossMaskVersion);
            w.WriteString("template", chat.Template);
            w.WriteNumber("conversations", chat.Conversations);
            w.WriteNumber("truncated", chat.Truncated);
            w.WriteNumber("dropped", chat.Dropped);
            w.WriteNumber("sequences", chat.Sequences);
            w.WriteNumber("trained_tokens", chat.TrainedTokens);
            w.WriteEndObject();
        }
        w.WriteEndObject();
    }

    static void Number(Utf8JsonWriter w, string name, long? value)
    {
        if (value is { } v) w.WriteNumber(name, v);
        else w.WriteNull(name);
    }
}
