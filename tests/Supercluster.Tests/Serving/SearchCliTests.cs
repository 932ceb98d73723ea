using System.CommandLine;
using System.Text.Json.Nodes;
using Supercluster.Cli;
using Supercluster.Cli.Commands;
using Supercluster.Search;

namespace Supercluster.Tests.Serving;

[Collection("Serving")]
public class SearchCliTests(ServingFixture f)
{
    static (int Code, string Out, string Err) Cli(params string[] args)
    {
        var root = new RootCommand();
        root.Options.Add(GlobalOptions.LibTorch);
        root.Options.Add(GlobalOptions.Verbose);
        root.Subcommands.Add(IndexCommand.Create());
        root.Subcommands.Add(SearchCommand.Create());
        var (oldOut, oldErr) = (Console.Out, Console.Error);
        var (o, e) = (new StringWriter(), new StringWriter());
        Console.SetOut(o); Console.SetError(e);
        try { return (CliRunner.Run(root, args), o.ToString(), e.ToString()); }
        finally { Console.SetOut(oldOut); Console.SetError(oldErr); }
    }

    [Fact]
    public void Index_embeds_passages_with_metadata_and_search_finds_them_from_the_terminal()
    {
        using var dir = new TempDir();
        var docs = ServingFixture.Docs.Select(d => new JsonObject { ["text"] = d.Text + " " + d.Text, ["year"] = d.Year, ["name"] = d.Name, ["party"] = "X" }.ToJsonString());
        File.WriteAllLines(dir["sotu.jsonl"], docs);
        var (code, _, err) = Cli("index", "--checkpoint", f.Checkpoint, "--input", dir["sotu.jsonl"], "--out", dir["sotu.index"], "--passage-tokens", "40");
        Assert.True(code == 0, err);
        var index = VectorIndex.Read(dir["sotu.index"]);
        Assert.True(index.Count > ServingFixture.Docs.Length, $"{index.Count} passages: documents were not split");
        Assert.All(index.Passages, p => Assert.True(System.Text.Encoding.UTF8.GetByteCount(p.Text) <= 40));
        Assert.Equal("1999", index.Passages[0].Metadata["year"]);
        Assert.Equal("X", index.Passages[0].Metadata["party"]);
        Assert.Equal("0", index.Passages[0].Metadata["passage"]);
        // Compact: 4-byte floats plus the passage text and metadata, nothing else of size.
        Assert.True(new FileInfo(Path.Combine(dir["sotu.index"], SearchIndex.VectorFile)).Length < index.Count * (ServingFixture.Config.NEmbd * 4 + 200));

        var first = index.Passages[3].Text;
        (code, var output, err) = Cli("search", "--index", dir["sotu.index"], "-k", "2", first);
        Assert.True(code == 0, err);
        var lines = output.Split('\n');
        Assert.StartsWith("1. 1.0000", lines[0]);
        Assert.Contains("year=", lines[0]);
        Assert.Contains("2. ", output);

        (code, _, err) = Cli("search", "--index", dir["missing.index"], "x");
        Assert.Equal(2, code);
        Assert.Contains("missing.index", err);
        File.WriteAllBytes(dir["bad.index"], [1, 2, 3]);
        (code, _, err) = Cli("search", "--index", dir["bad.index"], "x");
        Assert.Equal(2, code);
        Assert.Contains("bad.index", err);
    }

    [Fact]
    public void Exact_search_ranks_by_cosine_and_round_trips_through_the_file()
    {
        using var dir = new TempDir();
        var rng = new Random(3);
        int n = 1000, d = 24;
        var vecs = new float[n * d];
        for (int i = 0; i < n; i++)
        {
            var row = vecs.AsSpan(i * d, d);
            for (int j = 0; j < d; j++) row[j] = (float)(rng.NextDouble() - 0.5);
            var norm = MathF.Sqrt(System.Numerics.Tensors.TensorPrimitives.SumOfSquares(row));
            for (int j = 0; j < d; j++) row[j] /= norm;
        }
        var passages = Enumerable.Range(0, n).Select(i => new Passage($"p{i}", new Dictionary<string, string> { ["i"] = i.ToString() })).ToList();
        var index = new VectorIndex(new IndexHeader(d, n, "m", "byte", 0, "mean", DateTime.UtcNow), vecs, passages);
        index.Write(dir["x.index"]);
        var back = VectorIndex.Read(dir["x.index"]);
        var q = back.Vector(123).ToArray();
        var hits = back.Search(q, 10);
        Assert.Equal(123, hits[0].Index);
        var brute = Enumerable.Range(0, n).Select(i => (i, s: Enumerable.Range(0, d).Sum(j => (double)q[j] * vecs[i * d + j]))).OrderByDescending(x => x.s).Take(10).Select(x => x.i);
        Assert.Equal(brute, hits.Select(h => h.Index));
        Assert.Equal("123", hits[0].Passage.Metadata["i"]);
    }
}
