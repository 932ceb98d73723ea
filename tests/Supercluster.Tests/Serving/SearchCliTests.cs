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

    [Fact]
    public async Task Search_json_prints_what_the_api_returns_and_bad_input_is_one_line_with_exit_2()
    {
        var (code, output, err) = Cli("search", "--index", f.IndexPath, "--json", "-k", "3", "--filter", "year>=1900", "health care");
        Assert.True(code == 0, err);
        var cli = JsonNode.Parse(output)!;
        var (status, api) = await f.Http.PostJson("/v1/search", new JsonObject { ["query"] = "health care", ["top_k"] = 3, ["filters"] = new JsonObject { ["year"] = new JsonObject { ["gte"] = "1900" } } });
        Assert.Equal(200, status);
        Assert.True(JsonNode.DeepEquals(api["data"], cli["data"]), $"cli {cli["data"]}\napi {api["data"]}");
        Assert.Equal(3, cli["data"]!.AsArray().Count);

        foreach (var (args, expect) in new[]
        {
            (new[] { "--filter", "author=x" }, "'author'"),
            (new[] { "--filter", "year=1990..soon" }, "'soon'"),
            (new[] { "--filter", "year" }, "FIELD=VALUE"),
            (new[] { "--mode", "fuzzy" }, "fuzzy"),
        })
        {
            (code, _, err) = Cli(["search", "--index", f.IndexPath, .. args, "tariff"]);
            Assert.Equal(2, code);
            Assert.Contains(expect, err);
            Assert.Single(err.Trim().Split('\n'));
        }
        (code, _, err) = Cli("search", "--index", f.IndexPath, " ");
        Assert.Equal(2, code);
        Assert.Contains("empty", err);
    }

    [Fact]
    public void Index_append_and_delete_from_the_terminal()
    {
        using var dir = new TempDir();
        File.WriteAllLines(dir["a.jsonl"], [
            new JsonObject { ["id"] = "a1", ["text"] = "Canals and turnpikes for the western farmers.", ["author"] = "Adams" }.ToJsonString(),
            new JsonObject { ["id"] = "a2", ["text"] = "The national bank holds the public deposits.", ["author"] = "Jackson" }.ToJsonString()]);
        File.WriteAllLines(dir["b.jsonl"], [new JsonObject { ["id"] = "b1", ["text"] = "Gold was found in California.", ["author"] = "Polk" }.ToJsonString()]);
        var (code, _, err) = Cli("index", "--checkpoint", f.Checkpoint, "--input", dir["a.jsonl"], "--out", dir["x.index"]);
        Assert.True(code == 0, err);
        (code, _, err) = Cli("index", "--checkpoint", f.Checkpoint, "--input", dir["b.jsonl"], "--out", dir["x.index"], "--append");
        Assert.True(code == 0, err);
        (code, var output, err) = Cli("search", "--index", dir["x.index"], "--mode", "keyword", "--json", "gold california");
        Assert.True(code == 0, err);
        Assert.Equal("b1", (string?)JsonNode.Parse(output)!["data"]![0]!["id"]);
        (code, _, err) = Cli("index", "--out", dir["x.index"], "--delete", "b1");
        Assert.True(code == 0, err);
        (code, output, _) = Cli("search", "--index", dir["x.index"], "--mode", "keyword", "--json", "gold california");
        Assert.Empty(JsonNode.Parse(output)!["data"]!.AsArray());
        (code, _, err) = Cli("index", "--out", dir["x.index"], "--delete", "zzz");
        Assert.Equal(2, code);
        Assert.Contains("zzz", err);
        // Appending with other passage settings than the index was built with is refused.
        (code, _, err) = Cli("index", "--checkpoint", f.Checkpoint, "--input", dir["b.jsonl"], "--out", dir["x.index"], "--append", "--passage-tokens", "7");
        Assert.Equal(2, code);
        Assert.Contains("--passage-tokens", err);
    }
}
