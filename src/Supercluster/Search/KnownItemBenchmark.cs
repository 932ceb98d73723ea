using System.Numerics.Tensors;
using System.Text.RegularExpressions;

namespace Supercluster.Search;

/// <summary>Recall@1, recall@10 and mean reciprocal rank (of the first 10) over known-item queries.</summary>
public sealed record RetrievalQuality(string Mode, int Queries, double RecallAt1, double RecallAt10, double Mrr)
{
    public override string ToString() => $"{Mode,-9} n={Queries}  R@1 {RecallAt1:F3}  R@10 {RecallAt10:F3}  MRR {Mrr:F3}";
}

/// <summary>
/// Known-item retrieval, which needs no human labels: a passage is degraded into a query, and the query should find
/// that passage. Degradation (seeded): take the passage's words; drop each with probability <see cref="Drop"/>
/// (keeping at least 3); replace each remaining word with probability <see cref="Replace"/> by its nearest
/// distributional neighbour in the corpus itself (cosine of positive-PMI co-occurrence vectors, window ±2, over the
/// corpus's most frequent words; words among the 50 most frequent are never replaced); swap each adjacent pair with
/// probability <see cref="Swap"/>.
/// </summary>
public sealed partial class KnownItemBenchmark
{
    public double Drop { get; init; } = 0.3;
    public double Replace { get; init; } = 0.3;
    public double Swap { get; init; } = 0.3;

    [GeneratedRegex(@"\p{L}[\p{L}\p{N}']*")]
    private static partial Regex Word();

    public static List<string> Words(string text) => Word().Matches(text).Select(m => m.Value.ToLowerInvariant()).ToList();

    readonly Dictionary<string, int> _vocab = new();
    readonly string[] _words;
    readonly float[] _ppmi; // [V, V] rows L2-normalised
    readonly Dictionary<int, string?> _neighbour = new();
    const int Frequent = 50;

    /// <param name="corpus">The texts whose co-occurrences define the synonyms.</param>
    /// <param name="vocabulary">How many of the most frequent words get vectors.</param>
    public KnownItemBenchmark(IEnumerable<string> corpus, int vocabulary = 4000)
    {
        var docs = corpus.Select(Words).ToList();
        _words = docs.SelectMany(w => w).GroupBy(w => w).OrderByDescending(g => g.Count()).ThenBy(g => g.Key, StringComparer.Ordinal)
            .Take(vocabulary).Select(g => g.Key).ToArray();
        for (int i = 0; i < _words.Length; i++) _vocab[_words[i]] = i;
        int v = _words.Length;
        var counts = new float[(long)v * v];
        foreach (var d in docs)
            for (int i = 0; i < d.Count; i++)
            {
                if (!_vocab.TryGetValue(d[i], out var a)) continue;
                for (int j = Math.Max(0, i - 2); j <= Math.Min(d.Count - 1, i + 2); j++)
                    if (j != i && _vocab.TryGetValue(d[j], out var b)) counts[(long)a * v + b]++;
            }
        var row = new double[v]; var col = new double[v]; double total = 0;
        for (int a = 0; a < v; a++) for (int b = 0; b < v; b++) { var c = counts[(long)a * v + b]; row[a] += c; col[b] += c; total += c; }
        _ppmi = counts;
        for (int a = 0; a < v; a++)
        {
            var r = _ppmi.AsSpan(a * v, v);
            for (int b = 0; b < v; b++) r[b] = r[b] > 0 ? (float)Math.Max(0, Math.Log(r[b] * total / (row[a] * col[b]))) : 0;
            var norm = MathF.Sqrt(TensorPrimitives.SumOfSquares(r));
            if (norm > 0) TensorPrimitives.Divide(r, norm, r);
        }
    }

    /// <summary>The corpus word whose contexts are most like <paramref name="word"/>'s, or null.</summary>
    public string? Synonym(string word)
    {
        if (!_vocab.TryGetValue(word, out var a) || a < Frequent) return null;
        if (_neighbour.TryGetValue(a, out var known)) return known;
        int v = _words.Length, best = -1;
        float bestScore = 0;
        var q = _ppmi.AsSpan(a * v, v);
        for (int b = Frequent; b < v; b++)
        {
            if (b == a) continue;
            var s = TensorPrimitives.Dot(q, _ppmi.AsSpan(b * v, v));
            if (s > bestScore) (bestScore, best) = (s, b);
        }
        return _neighbour[a] = best < 0 ? null : _words[best];
    }

    /// <summary>The degraded query for <paramref name="passage"/>, or null when it has fewer than 6 words.</summary>
    public string? Degrade(string passage, Random rng)
    {
        var words = Words(passage);
        if (words.Count < 6) return null;
        var kept = words.Where(_ => rng.NextDouble() >= Drop).ToList();
        while (kept.Count < 3) kept.Add(words[rng.Next(words.Count)]);
        for (int i = 0; i < kept.Count; i++)
            if (rng.NextDouble() < Replace && Synonym(kept[i]) is { } s) kept[i] = s;
        for (int i = 0; i + 1 < kept.Count; i++)
            if (rng.NextDouble() < Swap) (kept[i], kept[i + 1]) = (kept[i + 1], kept[i]);
        return string.Join(' ', kept);
    }

    /// <summary>Degraded queries for up to <paramref name="count"/> random live passages of <paramref name="index"/>: (row, query).</summary>
    public List<(int Row, string Query)> Queries(SearchIndex index, int count, int seed)
    {
        var rng = new Random(seed);
        var rows = Enumerable.Range(0, index.Vectors.Count).Where(r => index.Live[r]).OrderBy(_ => rng.Next()).ToList();
        var list = new List<(int, string)>();
        foreach (var row in rows)
        {
            if (list.Count == count) break;
            if (Degrade(index.Vectors.Passages[row].Text, rng) is { } q) list.Add((row, q));
        }
        return list;
    }

    /// <summary>Runs every query in <paramref name="mode"/> (top 10) and scores where the source passage lands.</summary>
    public static RetrievalQuality Evaluate(SearchIndex index, EmbeddingModel? model, IReadOnlyList<(int Row, string Query)> queries, SearchMode mode,
        Func<SearchRequest, SearchRequest>? configure = null)
    {
        int at1 = 0, at10 = 0; double rr = 0;
        foreach (var (row, query) in queries)
        {
            var request = new SearchRequest(query, mode, 10);
            var hits = index.Search(configure?.Invoke(request) ?? request, model).Hits;
            int rank = hits.Select(h => h.Row).ToList().IndexOf(row) + 1;
            if (rank == 1) at1++;
            if (rank >= 1) { at10++; rr += 1.0 / rank; }
        }
        int n = queries.Count;
        return new RetrievalQuality(mode.ToString().ToLowerInvariant(), n, (double)at1 / n, (double)at10 / n, rr / n);
    }
}
