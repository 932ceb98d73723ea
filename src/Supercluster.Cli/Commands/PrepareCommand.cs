using System.CommandLine;
using Supercluster.Data;
using Supercluster.Data.Pipeline;
using Supercluster.Distributed;
using Supercluster.Runtime;
using Supercluster.Tokenization;

namespace Supercluster.Cli.Commands;

/// <summary>
/// <c>prepare</c>: text corpus (or a built-in sample) → filters, PII scrubbing, deduplication → token shards + meta.json.
/// Needs no libtorch. Under mpirun/Slurm every rank reads its part of the input and the ranks deduplicate together.
/// </summary>
public static class PrepareCommand
{
    public static Command Create()
    {
        var input = new Option<string[]>("--input", "-i") { Description = "Files or folders (recursive) with the corpus", AllowMultipleArgumentsPerToken = true };
        var sample = new Option<string?>("--sample") { Description = $"Built-in corpus instead of --input: {string.Join(", ", SampleCorpora.Names)}" };
        var output = new Option<string>("--out", "-o") { Description = "Output folder for shards and meta.json", Required = true };
        var tokenizer = new Option<string>("--tokenizer") { Description = $"Tokenizer: {string.Join(", ", Tokenizers.Names)}", DefaultValueFactory = _ => "gpt2" };
        var format = new Option<string>("--format") { Description = "Input format: auto (by extension), txt, jsonl, parquet; or chat (JSONL of messages or prompt/completion → packed sequences + loss masks for fine-tuning, docs/data.md)", DefaultValueFactory = _ => "auto" };
        var seqLen = new Option<int>("--seq-len") { Description = "chat: tokens per packed sequence (train with the same --seq-len)", DefaultValueFactory = _ => 1024 };
        var overlong = new Option<string>("--overlong") { Description = "chat: conversations longer than --seq-len are truncated or dropped (counted either way)", DefaultValueFactory = _ => "truncate" };
        var textField = new Option<string>("--text-field") { Description = "JSONL/parquet field with the text (dotted paths like post.text work for JSONL)", DefaultValueFactory = _ => "text" };
        var valFraction = new Option<double>("--val-fraction") { Description = "Share of documents for the val split", DefaultValueFactory = _ => 0.05 };
        var shardTokens = new Option<long>("--shard-tokens") { Description = "Most tokens per shard file", DefaultValueFactory = _ => 100_000_000 };
        var chunkChars = new Option<long>("--chunk-chars") { Description = "Most characters of text in flight (read, not yet tokenized and spilled): bounds memory per rank", DefaultValueFactory = _ => 8L << 20 };
        var dedup = new Option<string>("--dedup") { Description = "Remove duplicates: none (exact ones are still counted), exact (normalised text), near (exact, then MinHash/LSH)", DefaultValueFactory = _ => "none" };
        var nearThreshold = new Option<double>("--near-threshold") { Description = "Jaccard similarity of word n-gram sets at which documents are near duplicates", DefaultValueFactory = _ => 0.8 };
        var nearPerms = new Option<int>("--near-perms") { Description = "MinHash permutations", DefaultValueFactory = _ => 128 };
        var nearNgram = new Option<int>("--near-ngram") { Description = "Words per shingle", DefaultValueFactory = _ => 5 };
        var dedupReport = new Option<string?>("--dedup-report") { Description = "Write duplicate clusters (document ids) to this JSONL file" };
        var filter = new Option<bool>("--filter") { Description = "Apply the quality rules (docs/data.md)" };
        var filterThreshold = new Option<string[]>("--filter-threshold") { Description = $"Override a rule's threshold, NAME=VALUE; rules: {string.Join(", ", QualityFilter.Rules.Select(r => $"{r.Name} ({r.Default})"))}", AllowMultipleArgumentsPerToken = true };
        var scrubPii = new Option<bool>("--scrub-pii") { Description = "Replace e-mail addresses, phone numbers and IP addresses with <EMAIL>, <PHONE>, <IP>" };
        var where = new Option<string[]>("--where") { Description = "Keep records whose field equals (FIELD=VALUE) or differs (FIELD!=VALUE); repeatable", AllowMultipleArgumentsPerToken = true };
        var minField = new Option<string[]>("--min-field") { Description = "Keep records whose numeric field is at least the value, FIELD=NUMBER", AllowMultipleArgumentsPerToken = true };
        var maxField = new Option<string[]>("--max-field") { Description = "Keep records whose numeric field is at most the value, FIELD=NUMBER", AllowMultipleArgumentsPerToken = true };

        var cmd = new Command("prepare", "Tokenize a corpus into llm.c-style train/val token shards");
        HelpExamples.Add(cmd, "prepare --sample sotu --tokenizer byte --out data/sotu-byte", "prepare --input posts.jsonl --text-field text --tokenizer gpt2 --val-fraction 0.01 --out data/posts", "prepare --input posts/ --dedup near --filter --scrub-pii --where lang=en --tokenizer gpt2 --out data/posts-clean",
            "prepare --format chat --input ads.jsonl --tokenizer gpt2 --seq-len 512 --out data/ads-chat");
        foreach (var o in new Option[] { input, sample, output, tokenizer, format, textField, valFraction, shardTokens, chunkChars, dedup, nearThreshold, nearPerms, nearNgram,
                     dedupReport, filter, filterThreshold, scrubPii, where, minField, maxField, seqLen, overlong }) cmd.Options.Add(o);
        cmd.SetAction(parse =>
        {
            var inputs = parse.GetValue(input) ?? [];
            var sampleName = parse.GetValue(sample);
            if ((inputs.Length > 0) == (sampleName is not null))
                throw new BadInputException("give exactly one of --input PATH… or --sample NAME");
            if (parse.GetValue(format)!.Trim().Equals("chat", StringComparison.OrdinalIgnoreCase))
            {
                if (sampleName is not null) throw new BadInputException("--format chat reads --input JSONL files, not --sample");
                var policy = parse.GetValue(overlong)!.Trim().ToLowerInvariant() switch
                {
                    "truncate" => OverlongPolicy.Truncate, "drop" => OverlongPolicy.Drop,
                    var other => throw new BadInputException($"--overlong '{other}': expected truncate or drop"),
                };
                var files = inputs.SelectMany(i => Directory.Exists(i) ? Directory.GetFiles(i, "*.jsonl", SearchOption.AllDirectories).Order(StringComparer.Ordinal).ToArray() : new[] { i }).ToList();
                ChatPreparer.Run(files, new ChatPrepareOptions
                {
                    OutDir = parse.GetValue(output)!, Tokenizer = parse.GetValue(tokenizer)!, SeqLen = parse.GetValue(seqLen), ValFraction = parse.GetValue(valFraction),
                    Overlong = policy, ShardTokens = parse.GetValue(shardTokens),
                }, Console.WriteLine);
                Console.WriteLine($"out         {Path.GetFullPath(parse.GetValue(output)!)}");
                return 0;
            }
            var fmt = CorpusReader.ParseFormat(parse.GetValue(format)!);
            var dedupMode = parse.GetValue(dedup)!.Trim().ToLowerInvariant() switch
            {
                "none" => DedupMode.None,
                "exact" => DedupMode.Exact,
                "near" => DedupMode.Near,
                var other => throw new BadInputException($"--dedup '{other}': expected none, exact or near"),
            };
            if (parse.GetValue(chunkChars) < 1) throw new BadInputException($"--chunk-chars {parse.GetValue(chunkChars)}: expected a positive number of characters");
            var thresholds = parse.GetValue(filterThreshold) ?? [];
            if (thresholds.Length > 0 && !parse.GetValue(filter)) throw new BadInputException("--filter-threshold needs --filter");
            var fields = new FieldFilter(parse.GetValue(where), parse.GetValue(minField), parse.GetValue(maxField));
            var options = new PrepareOptions
            {
                OutDir = parse.GetValue(output)!,
                Tokenizer = parse.GetValue(tokenizer)!,
                ValFraction = parse.GetValue(valFraction),
                ShardTokens = parse.GetValue(shardTokens),
                ChunkChars = parse.GetValue(chunkChars),
                Source = sampleName is not null ? $"sample:{sampleName}" : string.Join(" ", inputs),
                Dedup = dedupMode,
                NearThreshold = parse.GetValue(nearThreshold),
                NearPermutations = parse.GetValue(nearPerms),
                NearNgram = parse.GetValue(nearNgram),
                DedupReport = parse.GetValue(dedupReport),
                Filter = parse.GetValue(filter) ? new QualityFilter(thresholds) : null,
                ScrubPii = parse.GetValue(scrubPii),
                Fields = fields.IsEmpty ? null : fields,
            };
            if (dedupMode == DedupMode.Near) { _ = new MinHash(options.NearPermutations, options.NearNgram); LshBands.Choose(options.NearPermutations, options.NearThreshold); }
            Tokenizers.Create(options.Tokenizer); // unknown names fail before any input is read

            var env = LaunchEnvironment.Detect();
            // Ranks on one node share its cores: each takes its share, so workers and readers do not oversubscribe them.
            int onNode = new[] { "OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE", "LOCAL_WORLD_SIZE" }
                .Select(v => int.TryParse(Environment.GetEnvironmentVariable(v), out var n) && n > 0 ? n : 0).FirstOrDefault(n => n > 0, 1);
            options = options with { Threads = Math.Max(1, Environment.ProcessorCount / onNode) };
            using ICommunicator comm = env.WorldSize > 1 ? Communicators.Create("mpi", deviceIsCuda: false, env) : new SingleProcess();
            void Warn(string line) { lock (Console.Error) Console.Error.WriteLine(comm.WorldSize > 1 ? $"[rank {comm.Rank}] {line}" : line); }
            IEnumerable<Document> docs;
            Func<double>? fraction = null;
            if (sampleName is not null) docs = comm.Rank == 0 ? SampleCorpora.Open(sampleName) : [];
            else
            {
                var files = CorpusReader.ListFiles(inputs, fmt);
                long total = files.Sum(f => new FileInfo(f.Path).Length);
                long mine = CorpusReader.PartStart(total, comm.Rank + 1, comm.WorldSize) - CorpusReader.PartStart(total, comm.Rank, comm.WorldSize);
                long read = 0;
                docs = CorpusReader.ReadPart(files, parse.GetValue(textField)!, comm.Rank, comm.WorldSize, Warn, n => read += n);
                fraction = () => mine == 0 ? 1 : Math.Min(1, read / (double)mine);
            }
            var result = Preparer.Run(docs, options, comm, new ProgressLine(), fraction);
            if (comm.Rank != 0) return 0;
            var m = result.Meta;
            var p = m.Pipeline!;
            Console.WriteLine($"tokenizer   {m.Tokenizer} (vocab {m.VocabSize}, eot {m.EotToken}, {m.TokenWidth}-byte tokens)");
            Console.WriteLine($"read        {p.DocumentsRead:N0} docs on {result.Ranks} rank(s)");
            foreach (var (stage, c) in p.Removed)
                Console.WriteLine($"removed     {stage}: {c.Documents:N0} docs, {c.Characters:N0} chars{(c.Tokens is { } t ? $", {t:N0} tokens" : "")}");
            Console.WriteLine($"duplicates  exact {p.ExactDuplicatesFound:N0}{(p.NearDuplicatesFound is { } nd ? $", near {nd:N0} (bands {p.Near!.Bands} × rows {p.Near.Rows})" : "")}{(dedupMode == DedupMode.None ? " (counted, kept: --dedup none)" : "")}");
            if (p.PiiReplaced is { } pii) Console.WriteLine($"pii         {string.Join(", ", pii.Select(kv => $"{kv.Key} {kv.Value:N0}"))} replaced");
            Console.WriteLine($"train       {m.TrainDocuments:N0} docs, {m.TrainTokens:N0} tokens, {m.TrainShards.Count} shard(s)");
            Console.WriteLine($"val         {m.ValDocuments:N0} docs, {m.ValTokens:N0} tokens, {m.ValShards.Count} shard(s)");
            double secs = Math.Max(result.Elapsed.TotalSeconds, 1e-9);
            Console.WriteLine($"time        {result.Elapsed.TotalSeconds:0.00} s, {p.DocumentsRead / secs:N0} docs/s read, {result.TokensPerSecond:N0} tokens/s written");
            Console.WriteLine($"phases      {string.Join(", ", result.Phases.Select(ph => $"{ph.Phase} {ph.Seconds:0.000} s"))} (rank 0)");
            Console.WriteLine($"memory      peak RSS {result.PeakRssBytes / (1024.0 * 1024):N0} MiB (largest rank)");
            Console.WriteLine($"out         {Path.GetFullPath(options.OutDir)}");
            return 0;
        });
        return cmd;
    }
}
