using System.Collections;
using System.Text.Json;
using Supercluster.Data;
using Supercluster.Tokenization;

namespace Supercluster.Search;

/// <summary>What embeds passages and queries for an index: the model's embedder and where it came from.</summary>
public sealed record EmbeddingModel(Func<IReadOnlyList<int[]>, float[][]> Embed, TextTokenizer Tokenizer, int Dimension, int Context,
    string Model, string ModelSha256, string Pooling)
{
    public float[] EmbedQuery(string text) => Embed([Tokenizer.Encode(text)])[0];
}

/// <summary>How documents become passages: the id and text fields and the passage size (0 = the model's context).</summary>
public sealed record IndexOptions(string IdField = "id", string TextField = "text", int PassageTokens = 0);

/// <summary>
/// A search index directory: <c>vectors.index</c> (the <see cref="VectorIndex"/> file: one unit vector, text and
/// fields per passage), <c>lucene/</c> (the <see cref="KeywordIndex"/>: BM25 and field filters) and
/// <c>manifest.json</c> (<see cref="IndexManifest"/>, written last). Every change (build, append, delete) writes a
/// complete new directory beside the old one and renames it into place, so a failed or killed build leaves the old
/// index (or none), never a partial one. A vector file alone (written before keyword indexes existed) opens too:
/// its keyword index is built in memory.
/// </summary>
public sealed class SearchIndex : IDisposable
{
    public const string ManifestFile = "manifest.json", VectorFile = "vectors.index", LuceneFolder = "lucene";
    /// <summary>Metadata every passage gets besides its document's fields.</summary>
    public const string DocKey = "doc", PassageKey = "passage", StartKey = "start", EndKey = "end";
    static readonly HashSet<string> Bookkeeping = [DocKey, PassageKey, StartKey, EndKey];

    SearchIndex(string path, IndexManifest manifest, VectorIndex vectors, KeywordIndex keywords)
    {
        Path = path; Manifest = manifest; Vectors = vectors; Keywords = keywords;
        Live = keywords.Rows(null, vectors.Count);
    }

    public string Path { get; }
    public IndexManifest Manifest { get; }
    public VectorIndex Vectors { get; }
    public KeywordIndex Keywords { get; }
    /// <summary>Rows of passages not deleted.</summary>
    public BitArray Live { get; }
    public int Count => Manifest.LivePassages;

    /// <summary>A passage's fields as the user gave them (without doc/passage/start/end).</summary>
    public static IEnumerable<KeyValuePair<string, string>> UserFields(IReadOnlyDictionary<string, string> metadata) =>
        metadata.Where(kv => !Bookkeeping.Contains(kv.Key));

    // ---------------------------------------------------------------- open

    public static SearchIndex Open(string path)
    {
        if (File.Exists(path)) return OpenVectorFile(path);
        if (!Directory.Exists(path)) throw new BadInputException($"index {path} does not exist");
        var manifestPath = System.IO.Path.Combine(path, ManifestFile);
        if (!File.Exists(manifestPath)) throw new BadInputException($"index {path} has no {ManifestFile}: not a search index, or its build did not finish");
        IndexManifest manifest;
        try { manifest = JsonSerializer.Deserialize<IndexManifest>(File.ReadAllBytes(manifestPath), IndexManifest.Json) ?? throw new JsonException("null"); }
        catch (JsonException e) { throw new BadInputException($"index {path}: corrupt {ManifestFile} ({e.Message})"); }
        if (manifest.Format != IndexManifest.CurrentFormat) throw new BadInputException($"index {path}: format '{manifest.Format}', expected '{IndexManifest.CurrentFormat}'; rebuild it");
        // Every file's full SHA-256, not a (size, mtime) cache: bit rot keeps both. Sizes first (cheap, catches
        // truncation), then the hashes on all cores (~1 GB/s per core with SHA extensions).
        foreach (var (name, entry) in manifest.Files)
        {
            var f = System.IO.Path.Combine(path, name);
            if (!File.Exists(f)) throw new BadInputException($"index {path}: {name} is missing; rebuild the index");
            if (new FileInfo(f).Length != entry.Bytes) throw Corrupt(name);
        }
        var bad = manifest.Files.AsParallel().Where(kv => IndexManifest.Sha256(System.IO.Path.Combine(path, kv.Key)) != kv.Value.Sha256).Select(kv => kv.Key).Order(StringComparer.Ordinal).FirstOrDefault();
        if (bad is not null) throw Corrupt(bad);
        BadInputException Corrupt(string name) => new($"index {path}: {name} is corrupt (size or SHA-256 differs from {ManifestFile}); rebuild the index");
        var vectors = VectorIndex.Read(System.IO.Path.Combine(path, VectorFile));
        KeywordIndex keywords;
        try { keywords = KeywordIndex.Open(System.IO.Path.Combine(path, LuceneFolder), verify: false); }
        catch (Exception e) when (e is IOException or Lucene.Net.Index.CorruptIndexException or InvalidOperationException)
        {
            throw new BadInputException($"index {path}: corrupt keyword index ({e.Message.Split('\n')[0]}); rebuild the index");
        }
        if (vectors.Count != manifest.Passages || keywords.Count != manifest.LivePassages || vectors.Header.Dimension != manifest.Dimension)
        {
            keywords.Dispose();
            throw new BadInputException($"index {path}: {vectors.Count} vectors and {keywords.Count} keyword passages, the manifest says {manifest.Passages} and {manifest.LivePassages}; rebuild the index");
        }
        return new SearchIndex(path, manifest, vectors, keywords);
    }

    static SearchIndex OpenVectorFile(string path)
    {
        var vectors = VectorIndex.Read(path);
        var schema = new Dictionary<string, FieldKind>();
        var passages = vectors.Passages.Select((p, row) =>
        {
            var fields = UserFields(p.Metadata).ToDictionary();
            foreach (var (k, v) in fields) if (!schema.ContainsKey(k)) schema[k] = FieldValues.KindOf(v); // a field's kind comes from its first value
            return new KeywordPassage(row, p.Metadata.GetValueOrDefault("id") ?? p.Metadata.GetValueOrDefault(DocKey) ?? row.ToString(), p.Text, fields);
        }).ToList();
        var h = vectors.Header;
        var manifest = new IndexManifest
        {
            Model = h.Model, ModelSha256 = "", Tokenizer = h.Tokenizer, Dimension = h.Dimension, PassageTokens = h.PassageTokens, Pooling = h.Pooling,
            IdField = "id", TextField = "text", Passages = h.Count, LivePassages = h.Count, NextDoc = h.Count, Fields = schema, Created = h.Created, Updated = h.Created,
            Documents = passages.Select(p => p.DocId).Distinct().Count(),
        };
        return new SearchIndex(path, manifest, vectors, KeywordIndex.InMemory(passages, schema));
    }

    /// <summary>Refuses to embed queries for this index with another model or tokenizer (the vectors would not compare).</summary>
    public void CheckModel(EmbeddingModel m)
    {
        if (m.Dimension != Manifest.Dimension)
            throw new BadInputException($"index {Path} holds {Manifest.Dimension}-dimensional vectors, the model {m.Model} makes {m.Dimension}");
        if (m.Tokenizer.Name != Manifest.Tokenizer)
            throw new BadInputException($"index {Path} was built with tokenizer {Manifest.Tokenizer}, the model {m.Model} uses {m.Tokenizer.Name}; rebuild the index or use its model");
        if (Manifest.ModelSha256.Length > 0 && m.ModelSha256 != Manifest.ModelSha256)
            throw new BadInputException($"index {Path} was built by another model ({Manifest.Model}, weights {Manifest.ModelSha256[..12]}…), not {m.Model} ({m.ModelSha256[..Math.Min(12, m.ModelSha256.Length)]}…); rebuild the index or use its model");
    }

    // ---------------------------------------------------------------- query

    /// <summary>Runs <paramref name="r"/>; <paramref name="model"/> embeds the query (semantic and hybrid modes).</summary>
    public SearchResponse Search(SearchRequest r, EmbeddingModel? model)
    {
        r = r.Validated();
        var filter = SearchFilters.ToQuery(r.Filters, Manifest.Fields);
        var textQuery = KeywordIndex.ParseQuery(r.Query);
        int depth = r.Mode == SearchMode.Hybrid ? Math.Max(r.TopK, r.Candidates) : r.TopK;

        var keyword = r.Mode == SearchMode.Semantic ? [] : Keywords.Search(textQuery, filter, depth);
        float[]? q = null;
        IReadOnlyList<SearchHit> semantic = [];
        if (r.Mode != SearchMode.Keyword)
        {
            if (model is null) throw new BadInputException($"mode {r.Mode.ToString().ToLowerInvariant()} needs the model to embed the query");
            q = model.EmbedQuery(r.Query);
            semantic = Vectors.Search(q, depth, filter is null ? Live : Keywords.Rows(filter, Vectors.Count));
        }

        var kRank = keyword.Select((h, i) => (h.Row, Rank: i + 1, h.Score)).ToDictionary(x => x.Row);
        var sRank = semantic.Select((h, i) => (Row: h.Index, Rank: i + 1, Score: (double)h.Score)).ToDictionary(x => x.Row);
        IEnumerable<(int Row, double Score)> ranked = r.Mode switch
        {
            SearchMode.Keyword => keyword.Select(h => (h.Row, (double)h.Score)),
            SearchMode.Semantic => semantic.Select(h => (h.Index, (double)h.Score)),
            _ => Fuse(kRank.Keys.Union(sRank.Keys), row =>
                     (kRank.TryGetValue(row, out var kr) ? r.KeywordWeight / (r.RrfK + kr.Rank) : 0) +
                     (sRank.TryGetValue(row, out var sr) ? r.SemanticWeight / (r.RrfK + sr.Rank) : 0),
                 (r.KeywordWeight + r.SemanticWeight) / (r.RrfK + 1)),
        };
        var hits = ranked.Take(r.TopK).Select(x =>
        {
            var p = Vectors.Passages[x.Row];
            double? cos = q is null ? null : System.Numerics.Tensors.TensorPrimitives.Dot(q, Vectors.Vector(x.Row));
            return new RankedPassage(x.Row, DocId(p), p, x.Score,
                kRank.TryGetValue(x.Row, out var kr) ? kr.Score : null, kRank.TryGetValue(x.Row, out kr) ? kr.Rank : null,
                cos, sRank.TryGetValue(x.Row, out var sr) ? sr.Rank : null, KeywordIndex.Snippet(textQuery, p.Text));
        }).ToList();
        return new SearchResponse(r, hits, Manifest.Model);
    }

    /// <summary>Rows by fused score (ties: lower row first), scaled by the best possible score.</summary>
    static IEnumerable<(int Row, double Score)> Fuse(IEnumerable<int> rows, Func<int, double> score, double max) =>
        rows.Select(row => (Row: row, Score: score(row) / max)).OrderByDescending(x => x.Score).ThenBy(x => x.Row);

    string DocId(Passage p) => p.Metadata.GetValueOrDefault(Manifest.IdField) ?? p.Metadata.GetValueOrDefault(DocKey) ?? "";

    bool _disposed;
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        Keywords.Dispose();
    }

    // ---------------------------------------------------------------- build, append, delete

    /// <summary>
    /// Builds a new index of <paramref name="docs"/> at <paramref name="path"/> (replacing what is there), or with
    /// <paramref name="append"/> adds them to the index there: old passages keep their vectors (nothing is re-embedded);
    /// a document whose id is already indexed replaces the old one. Returns the new manifest.
    /// </summary>
    public static IndexManifest Build(string path, IEnumerable<Document> docs, EmbeddingModel model, IndexOptions o, bool append, Action<int>? progress = null)
    {
        SearchIndex? old = null;
        if (append)
        {
            if (File.Exists(path)) throw new BadInputException($"--append: {path} is a vector file of an older version; rebuild it without --append");
            if (!Directory.Exists(path)) throw new BadInputException($"--append: index {path} does not exist (build it first without --append)");
            old = Open(path);
            if (old.Manifest.ModelSha256.Length == 0) { old.Dispose(); throw new BadInputException($"--append: {path} is a vector file of an older version; rebuild it without --append"); }
        }
        using (old)
        {
            old?.CheckModel(model);
            if (old is not null && (o.IdField != old.Manifest.IdField || o.TextField != old.Manifest.TextField || (o.PassageTokens != old.Manifest.PassageTokens)))
                throw new BadInputException($"--append: the index was built with --id-field {old.Manifest.IdField} --text-field {old.Manifest.TextField} --passage-tokens {old.Manifest.PassageTokens}; give the same");
            int size = o.PassageTokens <= 0 ? model.Context : Math.Min(o.PassageTokens, model.Context);
            var schema = old is null ? new Dictionary<string, FieldKind>() : new Dictionary<string, FieldKind>(old.Manifest.Fields);
            var passages = old is null ? new List<Passage>() : old.Vectors.Passages.ToList();
            var vectors = new List<float>(old is null ? 0 : old.Vectors.Count * model.Dimension);
            for (int i = 0; old is not null && i < old.Vectors.Count; i++) vectors.AddRange(old.Vectors.Vector(i));
            var oldIds = old is null ? new Dictionary<string, List<int>>() : IdsToRows(old);
            long nextDoc = old?.Manifest.NextDoc ?? 0;

            return Write(path, old, tmp =>
            {
                using var writer = KeywordIndex.OpenWriter(System.IO.Path.Combine(tmp, LuceneFolder), create: old is null, schema);
                var seen = new HashSet<string>();
                var replaced = new List<string>();
                var pending = new List<(KeywordPassage Keyword, Passage Passage, int[] Tokens)>();
                void Flush()
                {
                    if (pending.Count == 0) return;
                    var embedded = model.Embed(pending.Select(x => x.Tokens).ToArray());
                    for (int i = 0; i < pending.Count; i++)
                    {
                        if (embedded[i].Length != model.Dimension) throw new InvalidOperationException("embedding of the wrong size");
                        vectors.AddRange(embedded[i]);
                        passages.Add(pending[i].Passage);
                        writer.Add(pending[i].Keyword);
                    }
                    pending.Clear();
                    progress?.Invoke(passages.Count);
                }
                foreach (var d in docs)
                {
                    var fields = new Dictionary<string, string>(d.Metadata ?? new Dictionary<string, string>());
                    long docNo = nextDoc++;
                    if (!fields.TryGetValue(o.IdField, out var id)) fields[o.IdField] = id = docNo.ToString();
                    if (!seen.Add(id)) throw new BadInputException($"document id '{id}' ({o.IdField}) appears twice in the input");
                    // Deleting now removes only the old passages: Lucene applies a delete to documents added before it.
                    if (oldIds.ContainsKey(id)) { replaced.Add(id); writer.Delete([id]); }
                    foreach (var (k, v) in fields) if (!schema.ContainsKey(k)) schema[k] = FieldValues.KindOf(v); // a field's kind comes from its first value
                    int part = 0;
                    foreach (var span in PassageSplitter.Split(d.Text, model.Tokenizer, size))
                    {
                        var text = span.Start >= 0 ? d.Text[span.Start..span.End] : model.Tokenizer.Decode(span.Tokens);
                        var meta = new Dictionary<string, string>(fields)
                        {
                            [DocKey] = docNo.ToString(), [PassageKey] = part++.ToString(), [StartKey] = span.Start.ToString(), [EndKey] = span.End.ToString(),
                        };
                        pending.Add((new KeywordPassage(passages.Count + pending.Count, id, text, fields), new Passage(text, meta), span.Tokens));
                        if (pending.Count == 64) Flush();
                    }
                }
                Flush();
                writer.Commit();
                // Replaced documents' old passages left the keyword index above; blank them in the vector file too.
                foreach (var id in replaced) foreach (var row in oldIds[id]) Blank(passages, vectors, row, model.Dimension);
                int live = passages.Count(p => p.Metadata.Count > 0);
                if (live == 0) throw new BadInputException("no text to index: the inputs hold no documents");
                var documents = passages.Where(p => p.Metadata.Count > 0).Select(p => p.Metadata[o.IdField]).Distinct().Count();
                var now = DateTime.UtcNow;
                return (new VectorIndex(new IndexHeader(model.Dimension, passages.Count, model.Model, model.Tokenizer.Name, o.PassageTokens, model.Pooling, now), vectors.ToArray(), passages),
                    new IndexManifest
                    {
                        Model = model.Model, ModelSha256 = model.ModelSha256, Tokenizer = model.Tokenizer.Name, Dimension = model.Dimension,
                        PassageTokens = o.PassageTokens, Pooling = model.Pooling, IdField = o.IdField, TextField = o.TextField,
                        Passages = passages.Count, LivePassages = live, Documents = documents, NextDoc = nextDoc, Fields = schema,
                        Created = old?.Manifest.Created ?? now, Updated = now,
                    });
            });
        }
    }

    /// <summary>Deletes the documents <paramref name="ids"/> (all their passages). Returns the ids that were not in the index.</summary>
    public static IReadOnlyList<string> Delete(string path, IReadOnlyCollection<string> ids)
    {
        if (!Directory.Exists(path)) throw new BadInputException($"index {path} does not exist");
        using var old = Open(path);
        var rowsOf = IdsToRows(old);
        var missing = ids.Where(id => !rowsOf.ContainsKey(id)).ToList();
        var found = ids.Where(rowsOf.ContainsKey).Distinct().ToList();
        if (found.Count == 0) return missing;
        Write(path, old, tmp =>
        {
            using (var writer = KeywordIndex.OpenWriter(System.IO.Path.Combine(tmp, LuceneFolder), create: false, old.Manifest.Fields))
            {
                writer.Delete(found);
                writer.Commit();
            }
            var passages = old.Vectors.Passages.ToList();
            var vectors = new float[(long)old.Vectors.Count * old.Manifest.Dimension];
            for (int i = 0; i < old.Vectors.Count; i++) old.Vectors.Vector(i).CopyTo(vectors.AsSpan(i * old.Manifest.Dimension));
            foreach (var id in found) foreach (var row in rowsOf[id]) { passages[row] = Blanked; Array.Clear(vectors, row * old.Manifest.Dimension, old.Manifest.Dimension); }
            int live = passages.Count(p => p.Metadata.Count > 0);
            return (new VectorIndex(old.Vectors.Header with { Created = DateTime.UtcNow }, vectors, passages),
                old.Manifest with { LivePassages = live, Documents = old.Manifest.Documents - found.Count, Updated = DateTime.UtcNow });
        });
        return missing;
    }

    static readonly Passage Blanked = new("", new Dictionary<string, string>());

    static void Blank(List<Passage> passages, List<float> vectors, int row, int dim)
    {
        passages[row] = Blanked;
        for (int j = 0; j < dim; j++) vectors[row * dim + j] = 0;
    }

    static Dictionary<string, List<int>> IdsToRows(SearchIndex index)
    {
        var map = new Dictionary<string, List<int>>();
        for (int row = 0; row < index.Vectors.Count; row++)
        {
            if (!index.Live[row]) continue;
            var id = index.DocId(index.Vectors.Passages[row]);
            if (!map.TryGetValue(id, out var rows)) map[id] = rows = [];
            rows.Add(row);
        }
        return map;
    }

    /// <summary>
    /// Makes the new index in a temporary directory beside <paramref name="path"/> (copying the old keyword index first
    /// when there is one), lets <paramref name="fill"/> write the keyword index and return the vectors and manifest,
    /// writes them with checksums (manifest last, all fsynced), then swaps the directory into place. On any failure
    /// the temporary directory is removed and the old index is untouched.
    /// </summary>
    static IndexManifest Write(string path, SearchIndex? old, Func<string, (VectorIndex Vectors, IndexManifest Manifest)> fill)
    {
        var full = System.IO.Path.GetFullPath(path).TrimEnd('/');
        var parent = System.IO.Path.GetDirectoryName(full)!;
        Directory.CreateDirectory(parent);
        var tmp = $"{full}.tmp-{Guid.NewGuid():N}";
        try
        {
            Directory.CreateDirectory(System.IO.Path.Combine(tmp, LuceneFolder));
            if (old is not null)
                foreach (var f in Directory.GetFiles(System.IO.Path.Combine(full, LuceneFolder)))
                    File.Copy(f, System.IO.Path.Combine(tmp, LuceneFolder, System.IO.Path.GetFileName(f)));
            var (vectors, manifest) = fill(tmp);
            vectors.Write(System.IO.Path.Combine(tmp, VectorFile));
            var files = Directory.GetFiles(tmp, "*", SearchOption.AllDirectories).Select(f => System.IO.Path.GetRelativePath(tmp, f)).Order(StringComparer.Ordinal)
                .ToDictionary(f => f, f => new IndexFile(new FileInfo(System.IO.Path.Combine(tmp, f)).Length, IndexManifest.Sha256(System.IO.Path.Combine(tmp, f))));
            manifest = manifest with { Files = files };
            using (var m = new FileStream(System.IO.Path.Combine(tmp, ManifestFile), FileMode.CreateNew))
            {
                JsonSerializer.Serialize(m, manifest, IndexManifest.Json);
                m.Flush(flushToDisk: true);
            }
            old?.Dispose();
            // Swap: the old index moves aside, the new one takes its name, the old one is removed.
            string? aside = null;
            if (Directory.Exists(full)) { aside = $"{full}.old-{Guid.NewGuid():N}"; Directory.Move(full, aside); }
            else if (File.Exists(full)) { aside = $"{full}.old-{Guid.NewGuid():N}"; File.Move(full, aside); }
            Directory.Move(tmp, full);
            if (Directory.Exists(aside)) Directory.Delete(aside, recursive: true);
            else if (aside is not null) File.Delete(aside);
            return manifest;
        }
        catch
        {
            if (Directory.Exists(tmp)) Directory.Delete(tmp, recursive: true);
            throw;
        }
    }
}
