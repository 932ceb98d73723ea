using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Supercluster.Search;

/// <summary>One file of an index directory: its size and SHA-256, checked when the index is opened.</summary>
public sealed record IndexFile(long Bytes, string Sha256);

/// <summary>
/// <c>INDEX/manifest.json</c>: how the index was made (model, its weights' SHA-256, tokenizer, pooling, analysis),
/// its fields and their kinds, counts, and every other file's size and checksum. Written last.
/// </summary>
public sealed record IndexManifest
{
    public const string CurrentFormat = "supercluster-search-1";
    public string Format { get; init; } = CurrentFormat;
    public required string Model { get; init; }
    public required string ModelSha256 { get; init; }
    public required string Tokenizer { get; init; }
    public required int Dimension { get; init; }
    public required int PassageTokens { get; init; }
    public required string Pooling { get; init; }
    public string Analysis { get; init; } = KeywordIndex.Analysis;
    public required string IdField { get; init; }
    public required string TextField { get; init; }
    /// <summary>Rows in the vector file (deleted passages keep their rows, blanked).</summary>
    public required int Passages { get; init; }
    public required int LivePassages { get; init; }
    public required int Documents { get; init; }
    /// <summary>Next number for documents without an id.</summary>
    public required long NextDoc { get; init; }
    public required Dictionary<string, FieldKind> Fields { get; init; }
    public Dictionary<string, IndexFile> Files { get; init; } = [];
    public DateTime Created { get; init; }
    public DateTime Updated { get; init; }

    public static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower, WriteIndented = true,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.SnakeCaseLower) },
    };

    public static string Sha256(string path)
    {
        using var f = File.OpenRead(path);
        return Convert.ToHexStringLower(SHA256.HashData(f));
    }
}

/// <summary>Identifies a checkpoint's weights, so an index is never queried with vectors of another model.</summary>
public static class ModelFingerprint
{
    /// <summary>SHA-256 of <c>model.safetensors</c>: from the checkpoint's manifest when it has one, else computed.</summary>
    public static string Of(string checkpointDir)
    {
        const string weights = "model.safetensors";
        var manifest = Path.Combine(checkpointDir, "manifest.json");
        if (File.Exists(manifest))
        {
            try
            {
                using var doc = JsonDocument.Parse(File.ReadAllBytes(manifest));
                if (doc.RootElement.TryGetProperty("files", out var files) && files.TryGetProperty(weights, out var e) && e.TryGetProperty("sha256", out var sha))
                    return sha.GetString()!;
            }
            catch (JsonException) { /* fall back to hashing */ }
        }
        var path = Path.Combine(checkpointDir, weights);
        return File.Exists(path) ? IndexManifest.Sha256(path) : throw new BadInputException($"checkpoint {checkpointDir} has no {weights}");
    }
}
