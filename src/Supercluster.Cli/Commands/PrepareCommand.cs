using System.CommandLine;
using Supercluster.Data;
using Supercluster.Runtime;
using Supercluster.Tokenization;

namespace Supercluster.Cli.Commands;

/// <summary><c>prepare</c>: text corpus (or a built-in sample) → token shards + meta.json. Needs no libtorch.</summary>
public static class PrepareCommand
{
    public static Command Create()
    {
        var input = new Option<string[]>("--input", "-i") { Description = "Files or folders (recursive) with the corpus", AllowMultipleArgumentsPerToken = true };
        var sample = new Option<string?>("--sample") { Description = $"Built-in corpus instead of --input: {string.Join(", ", SampleCorpora.Names)}" };
        var output = new Option<string>("--out", "-o") { Description = "Output folder for shards and meta.json", Required = true };
        var tokenizer = new Option<string>("--tokenizer") { Description = $"Tokenizer: {string.Join(", ", Tokenizers.Names)}", DefaultValueFactory = _ => "gpt2" };
        var format = new Option<string>("--format") { Description = "Input format: auto (by extension), txt, jsonl, parquet", DefaultValueFactory = _ => "auto" };
        var textField = new Option<string>("--text-field") { Description = "JSONL/parquet field with the text (dotted paths like post.text work for JSONL)", DefaultValueFactory = _ => "text" };
        var valFraction = new Option<double>("--val-fraction") { Description = "Share of documents for the val split", DefaultValueFactory = _ => 0.05 };
        var shardTokens = new Option<long>("--shard-tokens") { Description = "Most tokens per shard file", DefaultValueFactory = _ => 100_000_000 };

        var cmd = new Command("prepare", "Tokenize a corpus into llm.c-style train/val token shards");
        HelpExamples.Add(cmd, "prepare --sample sotu --tokenizer byte --out data/sotu-byte", "prepare --input posts.jsonl --text-field text --tokenizer gpt2 --val-fraction 0.01 --out data/posts");
        foreach (var o in new Option[] { input, sample, output, tokenizer, format, textField, valFraction, shardTokens }) cmd.Options.Add(o);
        cmd.SetAction(parse =>
        {
            var inputs = parse.GetValue(input) ?? [];
            var sampleName = parse.GetValue(sample);
            if ((inputs.Length > 0) == (sampleName is not null))
                throw new BadInputException("give exactly one of --input PATH… or --sample NAME");
            var fmt = CorpusReader.ParseFormat(parse.GetValue(format)!);
            var docs = sampleName is not null
                ? SampleCorpora.Open(sampleName)
                : CorpusReader.Read(inputs, fmt, parse.GetValue(textField)!);
            var options = new PrepareOptions
            {
                OutDir = parse.GetValue(output)!,
                Tokenizer = parse.GetValue(tokenizer)!,
                ValFraction = parse.GetValue(valFraction),
                ShardTokens = parse.GetValue(shardTokens),
                Source = sampleName is not null ? $"sample:{sampleName}" : string.Join(" ", inputs),
            };
            Tokenizers.Create(options.Tokenizer); // unknown names fail before any input is read
            var result = Preparer.Run(docs, options, new ProgressLine());
            var m = result.Meta;
            Console.WriteLine($"tokenizer   {m.Tokenizer} (vocab {m.VocabSize}, eot {m.EotToken}, {m.TokenWidth}-byte tokens)");
            Console.WriteLine($"train       {m.TrainDocuments:N0} docs, {m.TrainTokens:N0} tokens, {m.TrainShards.Count} shard(s)");
            Console.WriteLine($"val         {m.ValDocuments:N0} docs, {m.ValTokens:N0} tokens, {m.ValShards.Count} shard(s)");
            Console.WriteLine($"time        {result.Elapsed.TotalSeconds:0.00} s, {result.TokensPerSecond:N0} tokens/s");
            Console.WriteLine($"out         {Path.GetFullPath(options.OutDir)}");
            return 0;
        });
        return cmd;
    }
}
