using System.CommandLine;
using Supercluster.Checkpointing;
using Supercluster.Inference;
using Supercluster.Runtime;
using Supercluster.Search;
using Supercluster.Tokenization;

namespace Supercluster.Cli.Commands;

/// <summary><c>search</c>: top-k passages of an index for a query, from the terminal.</summary>
public static class SearchCommand
{
    public static Command Create()
    {
        var index = new Option<string>("--index") { Description = "Index file from 'supercluster index'", Required = true };
        var query = new Argument<string>("query") { Description = "Text to search for" };
        var topK = new Option<int>("--top-k", "-k") { DefaultValueFactory = _ => 5 };
        var checkpoint = new Option<string?>("--checkpoint") { Description = "Model that embeds the query (default: the one that built the index)" };
        var device = new Option<string>("--device") { Description = "auto, cpu or cuda[:N]", DefaultValueFactory = _ => "auto" };
        var cmd = new Command("search", "Search an index: the passages most similar to a query (cosine of embeddings)");
        HelpExamples.Add(cmd, "search --index sotu.index \"the tariff\" --top-k 3");
        cmd.Arguments.Add(query);
        foreach (var o in new Option[] { index, topK, checkpoint, device }) cmd.Options.Add(o);
        cmd.SetAction(parse =>
        {
            int k = parse.GetValue(topK);
            if (k < 1) throw new BadInputException($"--top-k = {k}, expected ≥ 1");
            var q = parse.GetValue(query)!;
            if (q.Trim().Length == 0) throw new BadInputException("the query is empty");
            var idx = VectorIndex.Read(parse.GetValue(index)!);
            CliRunner.LoadTorch(parse);
            var dev = DeviceSelect.Resolve(parse.GetValue(device)!);
            var (model, tokName, _) = ModelCheckpoint.LoadForInference(parse.GetValue(checkpoint) ?? idx.Header.Model, dev);
            using var _m = model;
            var embedder = new Embedder(model, dev);
            if (embedder.Dimension != idx.Header.Dimension)
                throw new BadInputException($"the model makes {embedder.Dimension}-dimensional vectors, the index holds {idx.Header.Dimension}");
            var vec = embedder.Embed([Tokenizers.Create(tokName).Encode(q)])[0];
            int rank = 1;
            foreach (var hit in idx.Search(vec, k))
            {
                var meta = string.Join(", ", hit.Passage.Metadata.Select(kv => $"{kv.Key}={kv.Value}"));
                var text = hit.Passage.Text.ReplaceLineEndings(" ");
                Console.WriteLine($"{rank++}. {hit.Score:F4}  [{meta}]");
                Console.WriteLine($"   {(text.Length > 300 ? text[..300] + "…" : text)}");
            }
            return 0;
        });
        return cmd;
    }
}
