using System.Text.Json.Serialization;

namespace Supercluster.Data.Pipeline;

/// <summary>Documents removed by one stage or rule; tokens for deduplication (tokenized before removal), characters for all.</summary>
public sealed record StageCount(
    [property: JsonPropertyName("documents")] long Documents,
    [property: JsonPropertyName("characters")] long Characters,
    [property: JsonPropertyName("tokens")] long? Tokens = null);

/// <summary>Near-duplicate settings as run (b·r ≤ permutations, chosen by <see cref="LshBands.Choose"/>).</summary>
public sealed record NearSettings(
    [property: JsonPropertyName("threshold")] double Threshold,
    [property: JsonPropertyName("ngram")] int Ngram,
    [property: JsonPropertyName("permutations")] int Permutations,
    [property: JsonPropertyName("bands")] int Bands,
    [property: JsonPropertyName("rows")] int Rows);

/// <summary>What <c>prepare</c>'s pipeline did, in meta.json under <c>pipeline</c>.</summary>
public sealed record PipelineReport
{
    [JsonPropertyName("documents_read")] public long DocumentsRead { get; init; }
    [JsonPropertyName("documents_kept")] public long DocumentsKept { get; init; }
    /// <summary>Stage → removals: <c>empty</c>, <c>fields:RULE</c>, <c>filter:RULE</c>, <c>dedup_exact</c>, <c>dedup_near</c>.</summary>
    [JsonPropertyName("removed")] public SortedDictionary<string, StageCount> Removed { get; init; } = new(StringComparer.Ordinal);
    /// <summary>Documents that repeat an earlier one after normalisation, counted even with <c>--dedup none</c>.</summary>
    [JsonPropertyName("exact_duplicates_found")] public long ExactDuplicatesFound { get; init; }
    [JsonPropertyName("near_duplicates_found")] public long? NearDuplicatesFound { get; init; }
    [JsonPropertyName("pii_replaced")] public SortedDictionary<string, long>? PiiReplaced { get; init; }
    [JsonPropertyName("dedup")] public string Dedup { get; init; } = "none";
    [JsonPropertyName("near")] public NearSettings? Near { get; init; }
    [JsonPropertyName("filter")] public SortedDictionary<string, double>? FilterThresholds { get; init; }
}
