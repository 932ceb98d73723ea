using Supercluster.Checkpointing;
using Supercluster.Data;
using Supercluster.Inference;
using Supercluster.Search;
using Supercluster.Tests.Serving;
using Supercluster.Tokenization;
using static TorchSharp.torch;

namespace Supercluster.Tests.Search;

/// <summary>The search index with the serving fixture's real (tiny, trained) model: build, append, delete, filters, bad input.</summary>
[Collection("Serving")]
public class SearchIndexTests(ServingFixture f)
{
    public static readonly Document[] Posts =
    [
        Post("p1", "alice", "2021-01-05T10:00:00Z", "en", "The railway strike stopped every freight train in the northern states."),
        Post("p2", "bob", "2021-03-10T09:30:00Z", "en", "Tariffs on imported steel raised prices for farmers and builders alike."),
        Post("p3", "alice", "2022-06-01T12:00:00Z", "de", "Die Bahn fährt heute nicht, weil die Gewerkschaft streikt."),
        Post("p4", "carol", "2022-11-20T18:45:00Z", "en", "A new hospital opened downtown with two hundred beds and a trauma centre."),
    ];

    static Document Post(string id, string author, string created, string lang, string text) =>
        new(text, new Dictionary<string, string> { ["id"] = id, ["author"] = author, ["created_at"] = created, ["lang"] = lang });

    /// <summary>The fixture's model as an index embedder, counting the passages it embeds.</summary>
    sealed class Counting
    {
        public int Embedded;
        public EmbeddingModel Model { get; }
        public Counting(string checkpoint)
        {
            var (model, tok, dir) = ModelCheckpoint.LoadForInference(checkpoint, CPU);
            var embedder = new Embedder(model, CPU);
            var m = IndexBuilder.Model(embedder, Tokenizers.Create(tok), dir);
            Model = m with { Embed = inputs => { Interlocked.Add(ref Embedded, inputs.Count); return embedder.Embed(inputs); } };
        }
    }

    static SearchResponse Find(string path, string query, SearchMode mode, EmbeddingModel m, params FieldFilter[] filters)
    {
        using var idx = SearchIndex.Open(path);
        return idx.Search(new SearchRequest(query, mode, 10) { Filters = filters }, m);
    }

    [Fact]
    public void Build_append_and_delete_keep_old_vectors_and_leave_no_partial_index()
    {
        using var dir = new TempDir();
        var path = dir["posts.index"];
        var c = new Counting(f.Checkpoint);
        var m1 = SearchIndex.Build(path, Posts, c.Model, new IndexOptions(PassageTokens: 32), append: false);
        Assert.Equal(4, m1.Documents);
        Assert.Equal(FieldKind.Date, m1.Fields["created_at"]);
        Assert.Equal(FieldKind.Keyword, m1.Fields["author"]);
        int firstBuild = c.Embedded;
        Assert.Equal(m1.Passages, firstBuild);
        float[] before;
        using (var idx = SearchIndex.Open(path))
        {
            before = idx.Vectors.Vector(0).ToArray();
            // Offsets: every passage is its document's substring.
            foreach (var p in idx.Vectors.Passages)
            {
                var doc = Posts.Single(d => d.Metadata!["id"] == p.Metadata["id"]);
                Assert.Equal(doc.Text[int.Parse(p.Metadata["start"])..int.Parse(p.Metadata["end"])], p.Text);
            }
        }

        var hit = Find(path, "steel tariffs", SearchMode.Keyword, c.Model).Hits[0];
        Assert.Equal("p2", hit.DocId);
        Assert.Contains("<mark>Tariffs</mark>", hit.Snippet);
        Assert.Equal("bob", hit.Passage.Metadata["author"]);

        // Append: only the new documents are embedded; p2 is replaced (same id).
        var more = new[] { Post("p5", "dave", "2023-02-02", "en", "Snow closed the mountain pass for three days."), Post("p2", "bob", "2021-03-11", "en", "Correction: quotas, not duties, on imported aluminium.") };
        var m2 = SearchIndex.Build(path, more, c.Model, new IndexOptions(PassageTokens: 32), append: true);
        Assert.Equal(firstBuild + m2.Passages - m1.Passages, c.Embedded);
        Assert.Equal(5, m2.Documents);
        using (var idx = SearchIndex.Open(path)) Assert.Equal(before, idx.Vectors.Vector(0).ToArray());
        Assert.DoesNotContain(Find(path, "steel tariffs", SearchMode.Keyword, c.Model).Hits, h => h.DocId == "p2");
        Assert.Equal("p2", Find(path, "aluminium quotas", SearchMode.Keyword, c.Model).Hits[0].DocId);
        Assert.Equal("p5", Find(path, "snow mountain", SearchMode.Hybrid, c.Model).Hits[0].DocId);

        // Delete: gone from every mode.
        Assert.Equal(["nope"], SearchIndex.Delete(path, ["p5", "nope"]));
        foreach (var mode in Enum.GetValues<SearchMode>())
            Assert.DoesNotContain(Find(path, "snow mountain pass", mode, c.Model).Hits, h => h.DocId == "p5");
        using (var idx = SearchIndex.Open(path)) Assert.Equal(4, idx.Manifest.Documents);

        // A failed append (duplicate id in the input) leaves the index as it was, and no temporary directory.
        var manifestBefore = File.ReadAllText(Path.Combine(path, SearchIndex.ManifestFile));
        var bad = new[] { Post("p9", "x", "2024-01-01", "en", "one"), Post("p9", "x", "2024-01-01", "en", "two") };
        var e = Assert.Throws<BadInputException>(() => SearchIndex.Build(path, bad, c.Model, new IndexOptions(PassageTokens: 32), append: true));
        Assert.Contains("p9", e.Message);
        Assert.Equal(manifestBefore, File.ReadAllText(Path.Combine(path, SearchIndex.ManifestFile)));
        Assert.Equal([path], Directory.GetFileSystemEntries(dir.Path).Where(p => p.Contains("posts.index")).ToArray());
        // A build whose input fails half-way (an exception from the reader) leaves nothing new.
        IEnumerable<Document> Failing() { yield return Posts[0]; throw new BadInputException("posts.jsonl:2: malformed JSON"); }
        Assert.Throws<BadInputException>(() => SearchIndex.Build(dir["other.index"], Failing(), c.Model, new IndexOptions(), append: false));
        Assert.False(Directory.Exists(dir["other.index"]));
        Assert.Single(Directory.GetFileSystemEntries(dir.Path));
    }

    [Fact]
    public void Filters_select_by_field_and_range_and_bad_filters_name_the_field()
    {
        using var dir = new TempDir();
        var path = dir["posts.index"];
        var c = new Counting(f.Checkpoint);
        SearchIndex.Build(path, Posts, c.Model, new IndexOptions(), append: false);
        string[] Ids(SearchMode mode, params string[] filters) =>
            Find(path, "train strike hospital tariffs Bahn", mode, c.Model, SearchFilters.ParseCli(filters).ToArray()).Hits.Select(h => h.DocId).Distinct().Order().ToArray();
        foreach (var mode in Enum.GetValues<SearchMode>())
        {
            Assert.Equal(["p1", "p3"], Ids(mode, "author=alice"));
            Assert.Equal(["p1", "p2"], Ids(mode, "created_at<2022-01-01"));
            Assert.Equal(["p3", "p4"], Ids(mode, "created_at=2022..2023"));
            Assert.Equal(["p2"], Ids(mode, "created_at>=2021-02", "created_at<2021-12-31", "lang=en"));
            Assert.Equal(["p1", "p3", "p4"], Ids(mode, "author=alice", "author=carol"));
        }
        Assert.Contains("'nope'", Assert.Throws<BadInputException>(() => Ids(SearchMode.Hybrid, "nope=1")).Message);
        Assert.Contains("not a date", Assert.Throws<BadInputException>(() => Ids(SearchMode.Hybrid, "created_at=2021..soon")).Message);
        Assert.Contains("malformed range", Assert.Throws<BadInputException>(() => Ids(SearchMode.Hybrid, "created_at=..")).Message);
        Assert.Contains("holds text", Assert.Throws<BadInputException>(() => Ids(SearchMode.Hybrid, "author>=a")).Message);
        Assert.Contains("FIELD=VALUE", Assert.Throws<BadInputException>(() => Ids(SearchMode.Hybrid, "author")).Message);
        Assert.Contains("empty", Assert.Throws<BadInputException>(() => Find(path, "  ", SearchMode.Keyword, c.Model)).Message);
    }

    [Fact]
    public void Another_model_or_tokenizer_and_corrupted_files_are_refused_in_one_line()
    {
        using var dir = new TempDir();
        var path = dir["posts.index"];
        var c = new Counting(f.Checkpoint);
        SearchIndex.Build(path, Posts, c.Model, new IndexOptions(), append: false);
        using (var idx = SearchIndex.Open(path))
        {
            idx.CheckModel(c.Model);
            Assert.Contains("another model", Assert.Throws<BadInputException>(() => idx.CheckModel(c.Model with { ModelSha256 = new string('0', 64) })).Message);
            Assert.Contains("tokenizer", Assert.Throws<BadInputException>(() => idx.CheckModel(c.Model with { Tokenizer = Tokenizers.Create("gpt2") })).Message);
        }
        foreach (var victim in new[] { SearchIndex.VectorFile, Directory.GetFiles(Path.Combine(path, SearchIndex.LuceneFolder)).Select(Path.GetFileName).First(n => n!.StartsWith('_'))! })
        {
            using var copy = new TempDir();
            var p2 = copy["i"];
            CopyDir(path, p2);
            var file = Path.Combine(p2, victim.Contains('_') ? SearchIndex.LuceneFolder : "", victim);
            var bytes = File.ReadAllBytes(file);
            bytes[bytes.Length / 2] ^= 0x5a;
            File.WriteAllBytes(file, bytes);
            var e = Assert.Throws<BadInputException>(() => SearchIndex.Open(p2));
            Assert.Contains(victim, e.Message);
            Assert.DoesNotContain('\n', e.Message);
        }
        File.Delete(Path.Combine(path, SearchIndex.ManifestFile));
        Assert.Contains("manifest", Assert.Throws<BadInputException>(() => SearchIndex.Open(path)).Message);
    }

    static void CopyDir(string from, string to)
    {
        foreach (var d in Directory.GetDirectories(from, "*", SearchOption.AllDirectories)) Directory.CreateDirectory(d.Replace(from, to));
        Directory.CreateDirectory(to);
        foreach (var file in Directory.GetFiles(from, "*", SearchOption.AllDirectories)) File.Copy(file, file.Replace(from, to));
    }
}
