using Supercluster.Data;
using Supercluster.Search;
using Supercluster.Tests.Serving;

namespace Supercluster.Tests.Search;

/// <summary>Known-item retrieval on a small fixed corpus with the fixture's real model: hybrid is not worse than the best single mode.</summary>
[Collection("Serving")]
public class KnownItemTests(ServingFixture f)
{
    static readonly string[] Corpus =
    [
        "The treasury reports a surplus and the tariff on imported wool should be reduced this year.",
        "Our navy patrols the Atlantic coast and protects merchant ships from pirates and privateers.",
        "Railroads now bind the western territories to the eastern cities and carry grain to market.",
        "The public schools of every state deserve support so that every child may learn to read.",
        "Congress must reform the civil service so that offices are filled by merit and not by favour.",
        "The Indian tribes were removed beyond the Mississippi under treaties the Senate ratified.",
        "Gold and silver coinage remains the foundation of sound currency and of public credit.",
        "Farmers suffered from drought and low prices, and many mortgages on their land were foreclosed.",
        "The postal service delivered more letters than ever before and its deficit has been reduced.",
        "Immigration brought millions of workers to the factories of the northern cities.",
        "The army was reduced after the war and the volunteers returned to their farms and shops.",
        "A canal across the isthmus would shorten the voyage between the two oceans by months.",
        "Health insurance costs must come down for working families and small businesses.",
        "Our soldiers stand ready to defend freedom against terror in distant lands.",
        "The economy added millions of jobs and unemployment fell to its lowest level in decades.",
        "Clean energy from wind and sun will power homes and cut the pollution of our air.",
        "Tax relief for the middle class will leave more money in the pockets of families.",
        "The internet connects classrooms and libraries to knowledge from across the world.",
        "Social Security must be preserved for retirees and strengthened for their grandchildren.",
        "Crime fell in our cities as more police walked the streets of every neighbourhood.",
    ];

    [Fact]
    public void Hybrid_is_not_worse_than_the_best_single_mode_on_a_fixed_known_item_set()
    {
        using var dir = new TempDir();
        var path = dir["fixed.index"];
        var (model, tok, ckpt) = Supercluster.Checkpointing.ModelCheckpoint.LoadForInference(f.Checkpoint, TorchSharp.torch.CPU);
        using var _ = model;
        var embedding = IndexBuilder.Model(new Supercluster.Inference.Embedder(model, TorchSharp.torch.CPU), Supercluster.Tokenization.Tokenizers.Create(tok), ckpt);
        SearchIndex.Build(path, Corpus.Select((t, i) => new Document(t, new Dictionary<string, string> { ["id"] = $"s{i}" })), embedding, new IndexOptions(), append: false);
        using var index = SearchIndex.Open(path);
        var bench = new KnownItemBenchmark(Corpus) { Drop = 0.4, Replace = 0.3, Swap = 0.3 };
        var queries = bench.Queries(index, 60, seed: 3);
        Assert.True(queries.Count >= Corpus.Length / 2, $"{queries.Count} queries");
        Assert.All(queries, q => Assert.NotEqual(index.Vectors.Passages[q.Row].Text.ToLowerInvariant(), q.Query));
        var results = Enum.GetValues<SearchMode>().ToDictionary(m => m, m => KnownItemBenchmark.Evaluate(index, embedding, queries, m));
        var best = results.Where(r => r.Key != SearchMode.Hybrid).Select(r => r.Value).ToList();
        var hybrid = results[SearchMode.Hybrid];
        var report = string.Join("; ", results.Values);
        Assert.True(hybrid.Mrr >= best.Max(b => b.Mrr), report);
        Assert.True(hybrid.RecallAt10 >= best.Max(b => b.RecallAt10), report);
        // The procedure makes real queries: BM25 finds most but not all of them first.
        Assert.InRange(results[SearchMode.Keyword].RecallAt10, 0.5, 1.0);
    }
}
