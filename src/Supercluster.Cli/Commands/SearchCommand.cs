using System.CommandLine;
using System.Net;
using Supercluster.Checkpointing;
using Supercluster.Inference;
using Supercluster.Runtime;
using Supercluster.Search;
using Supercluster.Tokenization;

namespace Supercluster.Cli.Commands;

/// <summary><c>search</c>: top-k passages of an index for a query (keyword, semantic or hybrid), from the terminal.</summary>
public static class SearchCommand
{
    public static Command Create()
    {
        var index = new Option<string>("--index") { Description = "Index from 'supercluster index'", Required = true };
        var query = new Argument<string>("query") { Description = "Text to search for" };
        var topK = new Option<int>("--top-k", "-k") { DefaultValueFactory = _ => 5 };
        var mode = new Option<string>("--mode") { Description = "keyword (BM25), semantic (cosine of embeddings) or hybrid (reciprocal-rank fusion)", DefaultValueFactory = _ => "hybrid" };
        var filter = new Option<string[]>("--filter") { Description = "FIELD=VALUE, FIELD=LOW..HIGH, FIELD>=VALUE (>, <=, <); repeat for more (same field: any of the values)" };
        var kw = new Option<double>("--keyword-weight") { Description = "Weight of the keyword ranking in hybrid mode", DefaultValueFactory = _ => 1 };
        var sw = new Option<double>("--semantic-weight") { Description = "Weight of the semantic ranking in hybrid mode (1 = plain RRF; the default suits this project's weak embeddings, see docs/serving.md)", DefaultValueFactory = _ => SearchRequest.DefaultSemanticWeight };
        var rrfK = new Option<int>("--rrf-k") { Description = "k of reciprocal-rank fusion", DefaultValueFactory = _ => SearchRequest.DefaultRrfK };
        var candidates = new Option<int>("--candidates") { Description = "How many passages of each ranking enter the fusion", DefaultValueFactory = _ => SearchRequest.DefaultCandidates };
        var json = new Option<bool>("--json") { Description = "Print the results as POST /v1/search returns them" };
        var checkpoint = new Option<string?>("--checkpoint") { Description = "Model that embeds the query (default: the one that built the index)" };
        var device = new Option<string>("--device") { Description = "auto, cpu or cuda[:N]", DefaultValueFactory = _ => "auto" };
        var cmd = new Command("search", "Search an index: keyword (BM25), semantic (embeddings) or hybrid, with field filters");
        HelpExamples.Add(cmd, "search --index sotu.index \"the tariff\" --top-k 3", "search --index posts.index \"new phone\" --mode keyword --filter lang=en --json");
        cmd.Arguments.Add(query);
        foreach (var o in new Option[] { index, topK, mode, filter, kw, sw, rrfK, candidates, json, checkpoint, device }) cmd.Options.Add(o);
        cmd.SetAction(parse =>
        {
            var request = new SearchRequest(parse.GetValue(query)!, SearchRequest.ParseMode(parse.GetValue(mode)!), parse.GetValue(topK))
            {
                Filters = SearchFilters.ParseCli(parse.GetValue(filter) ?? []),
                KeywordWeight = parse.GetValue(kw), SemanticWeight = parse.GetValue(sw), RrfK = parse.GetValue(rrfK), Candidates = parse.GetValue(candidates),
            }.Validated();
            using var idx = SearchIndex.Open(parse.GetValue(index)!);
            SearchResponse response;
            if (request.Mode == SearchMode.Keyword) response = idx.Search(request, null);
            else
            {
                CliRunner.LoadTorch(parse);
                var dev = DeviceSelect.Resolve(parse.GetValue(device)!);
                var (model, tokName, dir) = ModelCheckpoint.LoadForInference(parse.GetValue(checkpoint) ?? idx.Manifest.Model, dev);
                using var _m = model;
                var embedding = IndexBuilder.Model(new Embedder(model, dev), Tokenizers.Create(tokName), dir);
                idx.CheckModel(embedding);
                response = idx.Search(request, embedding);
            }
            if (parse.GetValue(json))
            {
                Console.WriteLine(response.ToJson().ToJsonString());
                return 0;
            }
            int rank = 1;
            foreach (var hit in response.Hits)
            {
                var fields = string.Join(", ", SearchIndex.UserFields(hit.Passage.Metadata).Select(kv => $"{kv.Key}={kv.Value}"));
                var scores = $"keyword {(hit.Keyword is { } k ? $"{k:F3} (#{hit.KeywordRank})" : "–")}, semantic {(hit.Semantic is { } s ? $"{s:F4}" + (hit.SemanticRank is { } r ? $" (#{r})" : "") : "–")}";
                Console.WriteLine($"{rank++}. {hit.Score:F4}  [{fields}]  {scores}");
                var snippet = WebUtility.HtmlDecode(hit.Snippet.Replace("<mark>", "**").Replace("</mark>", "**")).ReplaceLineEndings(" ");
                Console.WriteLine($"   {snippet}");
            }
            return 0;
        });
        return cmd;
    }
}
