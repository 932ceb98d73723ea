using System.Text.Json;
using Supercluster.Data;
using Supercluster.Data.Pipeline;

namespace Supercluster.Tests.Data;

/// <summary>Exact and near deduplication: what is removed, what is kept, and recall/precision on planted duplicates.</summary>
public class DedupTests
{
    /// <summary>Random "words" with a Zipf-like frequency, so texts look like language to the shingling.</summary>
    static readonly string[] Vocab = MakeVocab();
    static string[] MakeVocab()
    {
        var rng = new Random(7);
        return [.. Enumerable.Range(0, 5000).Select(_ => new string([.. Enumerable.Range(0, rng.Next(2, 9)).Select(_ => (char)('a' + rng.Next(26)))]))];
    }
    static string[] Words(Random rng, int n) => [.. Enumerable.Range(0, n).Select(_ => Vocab[(int)(Math.Pow(rng.NextDouble(), 2) * Vocab.Length)])];

    static (PipelineReport Report, HashSet<long> Removed) Run(IReadOnlyList<string> texts, DedupMode mode, int ngram = 5)
    {
        using var dir = new TempDir();
        var meta = Preparer.Run(texts.Select(t => new Document(t)), new PrepareOptions
        {
            OutDir = dir["o"], Tokenizer = "byte", ValFraction = 0, Dedup = mode, NearNgram = ngram, DedupReport = dir["clusters.jsonl"],
        }).Meta;
        var removed = File.ReadAllLines(dir["clusters.jsonl"])
            .SelectMany(l => JsonDocument.Parse(l).RootElement.GetProperty("removed").EnumerateArray().Select(e => e.GetInt64())).ToHashSet();
        return (meta.Pipeline!, removed);
    }

    [Fact]
    public void ExactCopiesAndCaseOrWhitespaceVariantsAreRemovedKeepingTheFirst()
    {
        var rng = new Random(1);
        var a = string.Join(' ', Words(rng, 80));
        var b = string.Join(' ', Words(rng, 80));
        string[] texts = [a, b, a, a.ToUpperInvariant(), "  " + a.Replace(" ", " \n\t ") + "\n", "ＡＢＣ " + b, "abc " + b];
        var (report, removed) = Run(texts, DedupMode.Exact);
        Assert.Equal([2L, 3L, 4L, 6L], removed.Order()); // "ＡＢＣ" (fullwidth) is NFKC-equal to "abc": doc 6 repeats doc 5
        Assert.Equal(4, report.Removed["dedup_exact"].Documents);
        Assert.Equal(4, report.ExactDuplicatesFound);
        Assert.Equal(3, report.DocumentsKept);
        // --dedup none: counted, kept.
        var (none, _) = Run(texts, DedupMode.None);
        Assert.Equal(4, none.ExactDuplicatesFound);
        Assert.Equal(7, none.DocumentsKept);
        Assert.False(none.Removed.ContainsKey("dedup_exact"));
    }

    [Fact]
    public void CaseFoldingIsFullNotJustLowerCase()
    {
        // Unicode full case folding (CaseFolding.txt, status C+F) where lower case alone differs: ß/ẞ → ss, ς → σ.
        Assert.Equal("strasse", TextNormalizer.Normalize("Straße"));
        Assert.Equal(TextNormalizer.Normalize("STRASSE"), TextNormalizer.Normalize("straẞe"));
        Assert.Equal(TextNormalizer.Normalize("ΟΔΟΣ"), TextNormalizer.Normalize("οδος"));
        Assert.Equal(new string('s', 10_000), TextNormalizer.Normalize(new string('ß', 5_000))); // grows past the text's length
        Assert.Equal("fine caf\u00e9", TextNormalizer.Normalize("\ufb01ne CAFE\u0301")); // NFKC: the ligature split, e + accent composed
        var rng = new Random(3);
        var a = string.Join(' ', Words(rng, 60));
        var (_, removed) = Run([a + " Straße", a + " STRASSE", a + " strasse"], DedupMode.Exact);
        Assert.Equal([1L, 2L], removed.Order());
    }

    [Fact]
    public void TenPercentEditsAreRemovedFiftyPercentEditsKept()
    {
        var rng = new Random(2);
        var texts = new List<string>();
        var expectRemoved = new List<long>();
        for (int i = 0; i < 20; i++)
        {
            var w = Words(rng, 200);
            texts.Add(string.Join(' ', w));
            int k = 20; // 10% of the words
            int at = rng.Next(0, 200 - k);
            var appended = w.Concat(Words(rng, k));                                  // 10% appended (signature, tag line)
            var deleted = w.Take(at).Concat(w.Skip(at + k));                        // 10% deleted in one place
            var replaced = w.Take(at).Concat(Words(rng, k / 2)).Concat(w.Skip(at + k / 2)); // 5% replaced in one place
            foreach (var v in new[] { appended, deleted, replaced }) { expectRemoved.Add(texts.Count); texts.Add(string.Join(' ', v)); }
            var half = w.Take(100).Concat(Words(rng, 100));                          // 50% replaced: a different document
            texts.Add(string.Join(' ', half));
            var scattered = w.Select(x => rng.NextDouble() < 0.5 ? Words(rng, 1)[0] : x); // 50% replaced, scattered
            texts.Add(string.Join(' ', scattered));
        }
        var (report, removed) = Run(texts, DedupMode.Near);
        Assert.Equal(expectRemoved, removed.Order());
        Assert.Equal(expectRemoved.Count, report.Removed["dedup_near"].Documents);
        Assert.True(report.Removed["dedup_near"].Tokens > 0);
    }

    [Fact]
    public void ScatteredWordEditsNeedUnigramShingles()
    {
        // 10% of words deleted at random places breaks about a third of the 5-gram shingles (J ≈ 0.5): not a near
        // duplicate under the default; with --near-ngram 1 (bag of words, J = 0.9) it is.
        var rng = new Random(3);
        var texts = new List<string>();
        for (int i = 0; i < 10; i++)
        {
            var w = Words(rng, 300).Distinct().ToArray();
            texts.Add(string.Join(' ', w));
            texts.Add(string.Join(' ', w.Where((_, j) => j % 10 != 5)));
        }
        Assert.Empty(Run(texts, DedupMode.Near).Removed);
        Assert.Equal(Enumerable.Range(0, 10).Select(i => 2L * i + 1), Run(texts, DedupMode.Near, ngram: 1).Removed.Order());
    }

    [Fact]
    public void PlantedDuplicatesAreFoundWithHighRecallAndPrecision()
    {
        var (texts, planted) = PlantedCorpus(new Random(4), bases: 1500, exactRate: 0.1, nearRate: 0.1);
        var (_, removed) = Run(texts, DedupMode.Near);
        double recall = removed.Count(planted.Contains) / (double)planted.Count;
        double precision = removed.Count(planted.Contains) / (double)removed.Count;
        Assert.True(recall >= 0.95, $"recall {recall:0.000}");
        Assert.True(precision >= 0.99, $"precision {precision:0.000}");
    }

    /// <summary>The band keys are computed on several threads (each its own rows' slots): the clusters must not depend on how many.</summary>
    [Fact]
    public void NearClustersDoNotDependOnTheThreadCount()
    {
        var rng = new Random(7);
        var texts = new List<string>();
        for (int i = 0; i < 13_000; i++) // > 3 × 4096 rows: three threads each take a part
        {
            var w = Words(rng, 40);
            if (i > 0 && rng.Next(8) == 0) { w = texts[rng.Next(texts.Count)].Split(' '); w[^1] = "edited"; } // a near copy
            texts.Add(string.Join(' ', w));
        }
        string Clusters(int threads)
        {
            using var dir = new TempDir();
            Preparer.Run(texts.Select(t => new Document(t)), new PrepareOptions
            {
                OutDir = dir["o"], Tokenizer = "byte", ValFraction = 0, Dedup = DedupMode.Near, Threads = threads, DedupReport = dir["clusters.jsonl"],
            });
            return File.ReadAllText(dir["clusters.jsonl"]);
        }
        var one = Clusters(1);
        Assert.True(one.Split('\n').Count(l => l.Contains("\"near\"")) > 500, "near clusters found");
        Assert.Equal(one, Clusters(3));
    }

    /// <summary>Base documents of 50–300 words; copies (exact, case/space variants) and near copies (≤10% edits in one place) later on.</summary>
    public static (List<string> Texts, HashSet<long> Planted) PlantedCorpus(Random rng, int bases, double exactRate, double nearRate)
    {
        var texts = new List<string>();
        var planted = new HashSet<long>();
        var pool = new List<string[]>();
        for (int i = 0; i < bases; i++)
        {
            var w = Words(rng, rng.Next(50, 300));
            pool.Add(w);
            texts.Add(string.Join(' ', w));
            double u = rng.NextDouble();
            if (u >= exactRate + nearRate) continue;
            var src = pool[rng.Next(pool.Count)];
            string copy;
            if (u < exactRate) copy = rng.Next(2) == 0 ? string.Join(' ', src).ToUpperInvariant() : string.Join("  ", src);
            else
            {
                int k = Math.Max(1, (int)(src.Length * 0.1 * rng.NextDouble()));
                int at = rng.Next(0, src.Length - k);
                copy = string.Join(' ', rng.Next(3) switch
                {
                    0 => src.Concat(Words(rng, k)),
                    1 => src.Take(at).Concat(src.Skip(at + k)),
                    _ => src.Take(at).Concat(Words(rng, Math.Max(1, k / 2))).Concat(src.Skip(at + Math.Max(1, k / 2))),
                });
            }
            planted.Add(texts.Count);
            texts.Add(copy);
        }
        return (texts, planted);
    }

    [Fact]
    public void MinHashEstimatesJaccardAndBandsFavourRecall()
    {
        var rng = new Random(5);
        var mh = new MinHash(256, 1);
        var a = Enumerable.Range(0, 400).Select(i => $"w{i}").ToList();
        var b = Enumerable.Range(100, 400).Select(i => $"w{i}").ToList(); // |A∩B| = 300, |A∪B| = 500: J = 0.6
        double est = MinHash.Similarity(mh.Signature(a), mh.Signature(b));
        Assert.InRange(est, 0.6 - 4 * Math.Sqrt(0.6 * 0.4 / 256), 0.6 + 4 * Math.Sqrt(0.6 * 0.4 / 256)); // 4 standard errors
        Assert.Null(mh.Signature([]));
        var lsh = LshBands.Choose(128, 0.8);
        Assert.True(lsh.Bands * lsh.Rows <= 128);
        Assert.True(lsh.CandidateProbability(0.8) >= 0.95);
        Assert.True(lsh.CandidateProbability(0.4) < 0.05, $"{lsh}: P(0.4) = {lsh.CandidateProbability(0.4)}");
        Assert.Contains("--near-threshold", Assert.Throws<BadInputException>(() => LshBands.Choose(128, 1.5)).Message);
    }

    [Fact]
    public void MinHashSpreadAndBandRateMatchTheoryForIndependentPermutations()
    {
        // The permutations share one 64-bit hash per shingle (h_i = lo + c_i·hi), so that they act as independent ones is
        // a property of the family, checked here: dependent permutations (in the extreme, equal multipliers) spread the
        // estimate more than √(J(1−J)/P) and make bands match too often. 600 pairs with
        // J = 133/167 ≈ 0.796 (150-word sets sharing 133, 1-word shingles): the spread must be within 15% of √(J(1−J)/128)
        // (the sample SD's own standard error is ~3%, so this is ~5 of them) and the LSH candidate rate within 0.03 of
        // 1 − (1 − J⁷)¹³ (its standard error is ~0.009), the mean error within 4 standard errors of 0.
        const int Trials = 600, N = 150, Shared = 133, P = 128;
        double j = Shared / (2.0 * N - Shared), sum = 0, squares = 0;
        var lsh = LshBands.Choose(P, 0.8);
        int candidates = 0;
        for (int t = 0; t < Trials; t++)
        {
            var mh = new MinHash(P, 1, seed: (ulong)t + 1);
            var a = mh.Signature([.. Enumerable.Range(0, N).Select(i => $"w{t}_{i}")])!;
            var b = mh.Signature([.. Enumerable.Range(N - Shared, N).Select(i => $"w{t}_{i}")])!;
            double e = MinHash.Similarity(a, b) - j;
            sum += e; squares += e * e;
            if (Enumerable.Range(0, lsh.Bands).Any(band => lsh.Key(a, band) == lsh.Key(b, band))) candidates++;
        }
        double mean = sum / Trials, sd = Math.Sqrt(squares / Trials - mean * mean), theory = Math.Sqrt(j * (1 - j) / P);
        Assert.InRange(sd, 0.85 * theory, 1.15 * theory);
        Assert.InRange(mean, -4 * theory / Math.Sqrt(Trials), 4 * theory / Math.Sqrt(Trials));
        Assert.InRange(candidates / (double)Trials, lsh.CandidateProbability(j) - 0.03, lsh.CandidateProbability(j) + 0.03);
    }

    [Fact]
    public void NormalizeWithWordSpansGivesTheTextAndSpansOfTheTwoPassForm()
    {
        // prepare takes MinHash's word spans from the normalising pass; they must be exactly WordSpans(Normalize(text)).
        string[] pieces = ["Hello", "world", "42", "x", ",", ".", "...", "!", "'", "-", " ", "  ", "\t", "\n", "\u00A0", "\u2003",
            "é", "e\u0301", "ﬁ", "Ａ", "İ", "\u212A", "😀", "日本語", "Straße", "ΣΑΣ", "a_b", "\u0903", "\u200B"];
        var rng = new Random(7);
        var words = new List<(int Start, int Length)>();
        // ASCII only (the spans' vector blocks): words and gaps of 1–40 characters, across and at 32-character block edges.
        string[] ascii = ["Hello", "world", "42", "x", ",", ".", "-", " ", "  ", "\t", "\n", "a_b", new('w', 31), new('Q', 33), new('7', 40), new(' ', 35)];
        for (int d = 0; d < 4000; d++)
        {
            var from = d < 2000 ? pieces : ascii;
            var text = string.Concat(Enumerable.Range(0, rng.Next(0, 40)).Select(_ => from[rng.Next(from.Length)]));
            var normalized = TextNormalizer.Normalize(text);
            Assert.Equal(normalized, TextNormalizer.Normalize(text, words));
            Assert.Equal(TextNormalizer.WordSpans(normalized), words);
        }
    }

    [Fact]
    public void VectorMinHashEqualsTheScalarFormula()
    {
        // Exact equality: the SIMD path computes the same (lo(x) + c·hi(x)) mod 2³² per shingle, lanes of permutations at a time.
        Assert.True(System.Numerics.Vector.IsHardwareAccelerated, "this test needs SIMD to compare the vector path");
        var rng = new Random(61);
        foreach (var (perms, ngram) in new[] { (128, 5), (130, 3), (7, 1) })
        {
            var mh = new MinHash(perms, ngram, seed: (ulong)perms);
            for (int d = 0; d < 50; d++)
            {
                // 1–300 words: shingle counts below, at and between multiples of the lane count
                var words = Enumerable.Range(0, rng.Next(1, 300)).Select(_ => rng.Next(d % 2 == 0 ? 50 : 100_000).ToString() + new string('é', rng.Next(3))).ToList();
                if (d == 0) words = [new string('w', 400), "x"];
                var scalar = mh.Signature(words, vector: false);
                Assert.Equal(scalar, mh.Signature(words, vector: true));
                // The span form over normalised text (what prepare uses) gives the same signature as the word list.
                var text = string.Join(" ", words);
                Assert.Equal(scalar, mh.Signature(text, System.Runtime.InteropServices.CollectionsMarshal.AsSpan(TextNormalizer.WordSpans(text))));
            }
        }
        // Word order matters within a shingle; the same words in another order are another shingle.
        var m1 = new MinHash(64, 2);
        Assert.NotEqual(m1.Signature(["a", "b"]), m1.Signature(["b", "a"]));
    }
}
