using System.Text.Json.Nodes;

namespace Supercluster.Search;

public enum SearchMode { Keyword, Semantic, Hybrid }

/// <summary>
/// A query: text, mode, top-k, field filters, and the fusion's parameters. Hybrid mode fuses the two rankings by
/// reciprocal rank (Cormack, Clarke &amp; Büttcher 2009): score(d) = Σ_m w_m / (k + rank_m(d)) over the modes that rank
/// d among their best <see cref="Candidates"/>, with k = 60 as in the paper.
/// </summary>
public sealed record SearchRequest(string Query, SearchMode Mode = SearchMode.Hybrid, int TopK = 5)
{
    public const int DefaultRrfK = 60, DefaultCandidates = 100, MaxTopK = 1000;
    /// <summary>
    /// Default weight of the semantic ranking (keyword: 1). Measured (docs/serving.md, Search): this project's
    /// models' embeddings lose to BM25 on every corpus tried, and equal weights make hybrid worse than keyword alone;
    /// below 1/(k+2) the semantic ranking orders what BM25 ties on or misses without overturning its top ranks. With a
    /// strong embedding model use 1 (Cormack et al.'s unweighted RRF).
    /// </summary>
    public const double DefaultSemanticWeight = 0.015;
    public IReadOnlyList<FieldFilter> Filters { get; init; } = [];
    public double KeywordWeight { get; init; } = 1;
    public double SemanticWeight { get; init; } = DefaultSemanticWeight;
    public int RrfK { get; init; } = DefaultRrfK;
    /// <summary>How deep each mode's ranking goes into the fusion (at least top-k).</summary>
    public int Candidates { get; init; } = DefaultCandidates;

    public static SearchMode ParseMode(string s) => s.Trim().ToLowerInvariant() switch
    {
        "keyword" => SearchMode.Keyword,
        "semantic" => SearchMode.Semantic,
        "hybrid" => SearchMode.Hybrid,
        _ => throw new BadInputException($"mode '{s}': expected keyword, semantic or hybrid"),
    };

    /// <summary>Checks every number; messages name the option as the API spells it.</summary>
    public SearchRequest Validated()
    {
        if (string.IsNullOrWhiteSpace(Query)) throw new BadInputException("query is empty");
        if (TopK is < 1 or > MaxTopK) throw new BadInputException($"top_k = {TopK}, expected 1–{MaxTopK}");
        if (!(KeywordWeight >= 0) || !(SemanticWeight >= 0) || double.IsInfinity(KeywordWeight) || double.IsInfinity(SemanticWeight) || KeywordWeight + SemanticWeight <= 0)
            throw new BadInputException($"weights keyword = {KeywordWeight}, semantic = {SemanticWeight}: expected finite, ≥ 0, not both 0");
        if (RrfK < 1) throw new BadInputException($"rrf_k = {RrfK}, expected ≥ 1");
        if (Candidates < 1) throw new BadInputException($"candidates = {Candidates}, expected ≥ 1");
        return this;
    }
}

/// <summary>
/// One hit. <see cref="Score"/> is the mode's score: BM25 (keyword), cosine (semantic), or the RRF sum divided by its
/// maximum Σ w_m / (k + 1) (hybrid: 1 = ranked first by every mode). Per-mode scores and ranks are null where that
/// mode did not rank the passage among its candidates (semantic cosine is always given when the mode ran).
/// </summary>
public sealed record RankedPassage(int Row, string DocId, Passage Passage, double Score, double? Keyword, int? KeywordRank,
    double? Semantic, int? SemanticRank, string Snippet);

public sealed record SearchResponse(SearchRequest Request, IReadOnlyList<RankedPassage> Hits, string Model)
{
    /// <summary>The JSON both <c>POST /v1/search</c> and <c>search --json</c> print.</summary>
    public JsonObject ToJson() => new()
    {
        ["object"] = "list", ["model"] = Model, ["query"] = Request.Query, ["mode"] = Request.Mode.ToString().ToLowerInvariant(),
        ["data"] = new JsonArray(Hits.Select(h => (JsonNode)new JsonObject
        {
            ["id"] = h.DocId,
            ["index"] = h.Row,
            ["passage"] = int.TryParse(h.Passage.Metadata.GetValueOrDefault(SearchIndex.PassageKey), out var p) ? p : null,
            ["start"] = Offset(h.Passage, SearchIndex.StartKey),
            ["end"] = Offset(h.Passage, SearchIndex.EndKey),
            ["score"] = Math.Round(h.Score, 6),
            ["scores"] = new JsonObject
            {
                ["keyword"] = h.Keyword is { } k ? Math.Round(k, 6) : null, ["keyword_rank"] = h.KeywordRank,
                ["semantic"] = h.Semantic is { } s ? Math.Round(s, 6) : null, ["semantic_rank"] = h.SemanticRank,
            },
            ["snippet"] = h.Snippet,
            ["text"] = h.Passage.Text,
            ["fields"] = new JsonObject(SearchIndex.UserFields(h.Passage.Metadata).Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)kv.Value))),
            ["metadata"] = new JsonObject(h.Passage.Metadata.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)kv.Value))),
        }).ToArray()),
    };

    static JsonNode? Offset(Passage p, string key) => int.TryParse(p.Metadata.GetValueOrDefault(key), out var v) ? v : null;
}
