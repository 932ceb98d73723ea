using System.CommandLine;
using Supercluster.Checkpointing;
using Supercluster.Data;
using Supercluster.Inference;
using Supercluster.Runtime;
using Supercluster.Search;
using Supercluster.Tokenization;

namespace Supercluster.Cli.Commands;

/// <summary><c>index</c>: embed documents (or passages) with a model into an index file for <c>search</c> and <c>serve --index</c>.</summary>
public static class IndexCommand
{
    public static Command Create()
    {
        var checkpoint = new Option<string>("--checkpoint") { Description = "Checkpoint (or run) directory whose model embeds the text", Required = true };
        var input = new Option<string[]>("--input") { Description = "Files or folders (txt, jsonl, parquet, as 'prepare' reads)", AllowMultipleArgumentsPerToken = true };
        var sample = new Option<string?>("--sample") { Description = $"Built-in corpus instead of --input: {string.Join(", ", SampleCorpora.Names)}" };
        var output = new Option<string>("--out") { Description = "Index file to write", Required = true };
        var format = new Option<string>("--format") { Description = "auto, txt, jsonl or parquet", DefaultValueFactory = _ => "auto" };
        var textField = new Option<string>("--text-field") { Description = "Field with the text (jsonl/parquet)", DefaultValueFactory = _ => "text" };
        var passage = new Option<int>("--passage-tokens") { Description = "Passage size in tokens (0 = whole documents, cut at the context)", DefaultValueFactory = _ => 0 };
        var device = new Option<string>("--device") { Description = "auto, cpu or cuda[:N]", DefaultValueFactory = _ => "auto" };

        var cmd = new Command("index", "Embed documents or passages into a search index");
        HelpExamples.Add(cmd, "index --checkpoint runs/sotu --sample sotu --out sotu.index");
        foreach (var o in new Option[] { checkpoint, input, sample, output, format, textField, passage, device }) cmd.Options.Add(o);
        cmd.SetAction(parse =>
        {
            var inputs = parse.GetValue(input) ?? [];
            var sampleName = parse.GetValue(sample);
            if ((inputs.Length > 0) == (sampleName is not null)) throw new BadInputException("give exactly one of --input PATH… or --sample NAME");
            int size = parse.GetValue(passage);
            if (size < 0) throw new BadInputException($"--passage-tokens = {size}, expected ≥ 0");
            var docs = sampleName is not null ? SampleCorpora.Open(sampleName) : CorpusReader.Read(inputs, CorpusReader.ParseFormat(parse.GetValue(format)!), parse.GetValue(textField)!);
            CliRunner.LoadTorch(parse);
            var dev = DeviceSelect.Resolve(parse.GetValue(device)!);
            var (model, tokName, dir) = ModelCheckpoint.LoadForInference(parse.GetValue(checkpoint)!, dev);
            using var _ = model;
            var tok = Tokenizers.Create(tokName);
            var started = DateTime.UtcNow;
            var index = IndexBuilder.Build(docs, new Embedder(model, dev), tok, size, dir, n => Console.Error.Write($"\r[index] {n:N0} passages"));
            Console.Error.WriteLine();
            if (index.Count == 0) throw new BadInputException("no text to index: the inputs hold no documents");
            var outPath = parse.GetValue(output)!;
            var parent = Path.GetDirectoryName(Path.GetFullPath(outPath));
            if (parent is not null) Directory.CreateDirectory(parent);
            index.Write(outPath);
            Console.Error.WriteLine($"[index] {index.Count:N0} passages × {index.Header.Dimension} dims → {outPath} ({new FileInfo(outPath).Length / 1024.0 / 1024.0:F1} MiB, {(DateTime.UtcNow - started).TotalSeconds:F1} s)");
            return 0;
        });
        return cmd;
    }
}
