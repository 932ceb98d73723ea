using System.CommandLine;
using Supercluster.Checkpointing;
using Supercluster.Data;
using Supercluster.Inference;
using Supercluster.Runtime;
using Supercluster.Search;
using Supercluster.Tokenization;

namespace Supercluster.Cli.Commands;

/// <summary><c>index</c>: build, extend or prune a search index (BM25 keyword index + the model's passage vectors) for <c>search</c> and <c>serve --index</c>.</summary>
public static class IndexCommand
{
    public static Command Create()
    {
        var checkpoint = new Option<string?>("--checkpoint") { Description = "Checkpoint (or run) directory whose model embeds the text (not needed for --delete)" };
        var input = new Option<string[]>("--input") { Description = "Files or folders (txt, jsonl, parquet, as 'prepare' reads)", AllowMultipleArgumentsPerToken = true };
        var sample = new Option<string?>("--sample") { Description = $"Built-in corpus instead of --input: {string.Join(", ", SampleCorpora.Names)}" };
        var output = new Option<string>("--out") { Description = "Index directory to write (replaced atomically; with --append/--delete: changed)", Required = true };
        var format = new Option<string>("--format") { Description = "auto, txt, jsonl or parquet", DefaultValueFactory = _ => "auto" };
        var textField = new Option<string>("--text-field") { Description = "Field with the text (jsonl/parquet)", DefaultValueFactory = _ => "text" };
        var idField = new Option<string>("--id-field") { Description = "Field with the document id (documents without one are numbered)", DefaultValueFactory = _ => "id" };
        var passage = new Option<int>("--passage-tokens") { Description = "Passage size in tokens (0 = the model's context)", DefaultValueFactory = _ => 0 };
        var append = new Option<bool>("--append") { Description = "Add the inputs to the index at --out without re-embedding it (an id already there is replaced)" };
        var delete = new Option<string[]>("--delete") { Description = "Delete these document ids from the index at --out", AllowMultipleArgumentsPerToken = true };
        var device = new Option<string>("--device") { Description = "auto, cpu or cuda[:N]", DefaultValueFactory = _ => "auto" };

        var cmd = new Command("index", "Build (or --append to, or --delete from) a hybrid search index: BM25 keyword index + passage embeddings");
        HelpExamples.Add(cmd, "index --checkpoint runs/sotu --sample sotu --out sotu.index", "index --checkpoint runs/sotu --input posts.jsonl --id-field id --out posts.index --append");
        foreach (var o in new Option[] { checkpoint, input, sample, output, format, textField, idField, passage, append, delete, device }) cmd.Options.Add(o);
        cmd.SetAction(parse =>
        {
            var outPath = parse.GetValue(output)!;
            var inputs = parse.GetValue(input) ?? [];
            var sampleName = parse.GetValue(sample);
            var deleteIds = parse.GetValue(delete) ?? [];
            if (deleteIds.Length > 0)
            {
                if (inputs.Length > 0 || sampleName is not null || parse.GetValue(append)) throw new BadInputException("--delete takes no --input, --sample or --append");
                var missing = SearchIndex.Delete(outPath, deleteIds);
                if (missing.Count == deleteIds.Distinct().Count()) throw new BadInputException($"--delete: no document with id {string.Join(", ", missing)} in {outPath}");
                if (missing.Count > 0) Console.Error.WriteLine($"[index] not in the index (skipped): {string.Join(", ", missing)}");
                Console.Error.WriteLine($"[index] deleted {deleteIds.Distinct().Count() - missing.Count} document(s) from {outPath}");
                return 0;
            }
            if ((inputs.Length > 0) == (sampleName is not null)) throw new BadInputException("give exactly one of --input PATH… or --sample NAME");
            int size = parse.GetValue(passage);
            if (size < 0) throw new BadInputException($"--passage-tokens = {size}, expected ≥ 0");
            var ckpt = parse.GetValue(checkpoint) ?? throw new BadInputException("--checkpoint is required to embed the documents");
            var docs = sampleName is not null ? SampleCorpora.Open(sampleName) : CorpusReader.Read(inputs, CorpusReader.ParseFormat(parse.GetValue(format)!), parse.GetValue(textField)!);
            CliRunner.LoadTorch(parse);
            var dev = DeviceSelect.Resolve(parse.GetValue(device)!);
            var (model, tokName, dir) = ModelCheckpoint.LoadForInference(ckpt, dev);
            using var _ = model;
            var embedding = IndexBuilder.Model(new Embedder(model, dev), Tokenizers.Create(tokName), dir);
            var started = DateTime.UtcNow;
            var manifest = SearchIndex.Build(outPath, docs, embedding, new IndexOptions(parse.GetValue(idField)!, parse.GetValue(textField)!, size),
                parse.GetValue(append), n => Console.Error.Write($"\r[index] {n:N0} passages"));
            Console.Error.WriteLine();
            long bytes = manifest.Files.Values.Sum(f => f.Bytes);
            Console.Error.WriteLine($"[index] {manifest.Documents:N0} documents, {manifest.LivePassages:N0} passages × {manifest.Dimension} dims, fields {string.Join(", ", manifest.Fields.Select(f => $"{f.Key}:{f.Value.ToString().ToLowerInvariant()}"))} → {outPath} ({bytes / 1024.0 / 1024.0:F1} MiB, {(DateTime.UtcNow - started).TotalSeconds:F1} s)");
            return 0;
        });
        return cmd;
    }
}
