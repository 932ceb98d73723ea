using System.Diagnostics;
using Supercluster.Runtime;
using Supercluster.Tokenization;

namespace Supercluster.Data;

/// <summary>Settings of one <c>prepare</c> run.</summary>
public sealed record PrepareOptions
{
    /// <summary>Output folder for shards and meta.json.</summary>
    public required string OutDir { get; init; }
    public string Tokenizer { get; init; } = "gpt2";
    /// <summary>Share of documents that go to the val split (0 ≤ F &lt; 1).</summary>
    public double ValFraction { get; init; } = 0.05;
    /// <summary>Most tokens per shard file.</summary>
    public long ShardTokens { get; init; } = 100_000_000;
    /// <summary>Characters of text tokenized per parallel batch: the memory bound of a run, whatever the corpus size.</summary>
    public long ChunkChars { get; init; } = 8L << 20;
    public int Threads { get; init; } = Environment.ProcessorCount;
    /// <summary>Where the text came from, recorded in meta.json.</summary>
    public string? Source { get; init; }
}

/// <summary>Outcome of a run. <see cref="PeakChunkChars"/> is the most text held at once (≤ ChunkChars + one document).</summary>
public sealed record PrepareResult(DatasetMeta Meta, TimeSpan Elapsed, long PeakChunkChars)
{
    public long Documents => Meta.TrainDocuments + Meta.ValDocuments;
    public long Tokens => Meta.TrainTokens + Meta.ValTokens;
    public double TokensPerSecond => Tokens / Math.Max(Elapsed.TotalSeconds, 1e-9);
}

/// <summary>
/// <c>prepare</c>: documents → tokens (+ EOT after each) → train/val shards + meta.json.
/// Documents are streamed in chunks of about <see cref="PrepareOptions.ChunkChars"/> characters; each chunk is tokenized
/// on all cores and written in input order, so output is identical for any thread count and memory does not grow with
/// the corpus. Everything is written into a staging folder inside the output folder and moved into place only when the
/// run succeeds (meta.json last): a failed run leaves the folder as it was.
/// </summary>
public static class Preparer
{
    public static PrepareResult Run(IEnumerable<Document> documents, PrepareOptions options, ProgressLine? progress = null)
    {
        if (options.ValFraction is < 0 or >= 1 || double.IsNaN(options.ValFraction))
            throw new BadInputException($"--val-fraction {options.ValFraction} is out of range; expected 0 <= F < 1");
        if (options.ShardTokens is < 2 or > int.MaxValue)
            throw new BadInputException($"--shard-tokens {options.ShardTokens} is out of range; expected 2..{int.MaxValue} (llm.c headers hold an int32 count)");
        if (options.ChunkChars < 1) throw new ArgumentOutOfRangeException(nameof(options), "ChunkChars must be positive");
        var tokenizer = Tokenizers.Create(options.Tokenizer);
        int version = ShardFormat.VersionFor(tokenizer.VocabSize);

        bool createdOut = !Directory.Exists(options.OutDir);
        Directory.CreateDirectory(options.OutDir);
        var staging = Path.Combine(options.OutDir, $".prepare-{Guid.NewGuid():N}");
        Directory.CreateDirectory(staging);
        var clock = Stopwatch.StartNew();
        try
        {
            using var train = new SplitWriter(staging, "train", version, options.ShardTokens);
            using var val = new SplitWriter(staging, "val", version, options.ShardTokens);
            long index = 0, peak = 0;
            int[]? pending = null; // one document of lookahead: lets the last one move to val if val would be empty
            bool pendingVal = false;
            var chunk = new List<Document>();
            long chunkChars = 0;

            void Flush()
            {
                if (chunk.Count == 0) return;
                peak = Math.Max(peak, chunkChars);
                var tokens = new int[chunk.Count][];
                Parallel.For(0, chunk.Count, new ParallelOptions { MaxDegreeOfParallelism = Math.Max(1, options.Threads) },
                    i => tokens[i] = tokenizer.Encode(chunk[i].Text));
                chunk.Clear();
                chunkChars = 0;
                foreach (var t in tokens)
                {
                    if (pending is not null) (pendingVal ? val : train).Append(pending, tokenizer.EotToken);
                    pending = t;
                    pendingVal = IsVal(index++, options.ValFraction);
                }
                long total = train.Tokens + val.Tokens + (pending?.Length + 1 ?? 0);
                progress?.Update($"prepare: {index:N0} docs, {total:N0} tokens, {total / Math.Max(clock.Elapsed.TotalSeconds, 1e-9):N0} tokens/s");
            }

            foreach (var doc in documents)
            {
                chunk.Add(doc);
                chunkChars += doc.Text.Length;
                if (chunkChars >= options.ChunkChars) Flush();
            }
            Flush();
            if (pending is null) throw new BadInputException("the corpus is empty: no documents found in the inputs");
            if (options.ValFraction > 0 && index >= 2 && val.Documents == 0 && !pendingVal) pendingVal = true;
            (pendingVal ? val : train).Append(pending, tokenizer.EotToken);
            train.Finish();
            val.Finish();

            var meta = new DatasetMeta(tokenizer.Name, tokenizer.VocabSize, tokenizer.EotToken, train.Tokens, val.Tokens)
            {
                TokenWidth = ShardFormat.TokenWidth(version),
                TrainDocuments = train.Documents,
                ValDocuments = val.Documents,
                TrainShards = train.Shards,
                ValShards = val.Shards,
                Source = options.Source,
            };
            Publish(staging, options.OutDir, meta);
            progress?.Done($"prepare: {index:N0} docs, {meta.TrainTokens + meta.ValTokens:N0} tokens in {ProgressLine.Format(clock.Elapsed)}");
            return new PrepareResult(meta, clock.Elapsed, peak);
        }
        catch
        {
            progress?.Done();
            try
            {
                Directory.Delete(staging, recursive: true);
                if (createdOut && !Directory.EnumerateFileSystemEntries(options.OutDir).Any()) Directory.Delete(options.OutDir);
            }
            catch (IOException) { /* best effort: the failure itself matters more */ }
            throw;
        }
    }

    /// <summary>Document <paramref name="i"/> is val iff ⌊(i+1)·F⌋ &gt; ⌊i·F⌋: spreads val evenly, no randomness needed.</summary>
    public static bool IsVal(long i, double fraction) => Math.Floor((i + 1) * fraction) > Math.Floor(i * fraction);

    /// <summary>Replaces the previous dataset (its meta.json first, so it is never half-valid) with the staged one.</summary>
    static void Publish(string staging, string outDir, DatasetMeta meta)
    {
        var oldMeta = Path.Combine(outDir, DatasetMeta.FileName);
        if (File.Exists(oldMeta)) File.Delete(oldMeta);
        foreach (var old in Directory.GetFiles(outDir, "*.bin"))
        {
            var name = Path.GetFileName(old);
            if (name.StartsWith("train_") || name.StartsWith("val_")) File.Delete(old);
        }
        foreach (var shard in meta.TrainShards.Concat(meta.ValShards))
            File.Move(Path.Combine(staging, shard.File), Path.Combine(outDir, shard.File));
        meta.Save(outDir);
        Directory.Delete(staging, recursive: true);
    }

    /// <summary>Appends documents to <c>SPLIT_NNNNNN.bin</c> shards, starting a new one at the token limit.</summary>
    sealed class SplitWriter(string dir, string split, int version, long shardTokens) : IDisposable
    {
        readonly List<ShardInfo> _shards = [];
        ShardWriter? _current;

        public IReadOnlyList<ShardInfo> Shards => _shards;
        public long Tokens { get; private set; }
        public long Documents { get; private set; }

        public void Append(int[] tokens, int eot)
        {
            Write(tokens);
            Write([eot]);
            Documents++;
        }

        void Write(ReadOnlySpan<int> tokens)
        {
            while (tokens.Length > 0)
            {
                _current ??= new ShardWriter(Path.Combine(dir, $"{split}_{_shards.Count:D6}.bin"), version);
                int n = (int)Math.Min(tokens.Length, shardTokens - _current.TokenCount);
                _current.Write(tokens[..n]);
                Tokens += n;
                tokens = tokens[n..];
                if (_current.TokenCount == shardTokens) Finish();
            }
        }

        public void Finish()
        {
            if (_current is null) return;
            _current.Commit();
            _shards.Add(new ShardInfo($"{split}_{_shards.Count:D6}.bin", _current.TokenCount));
            _current.Dispose();
            _current = null;
        }

        public void Dispose() => _current?.Dispose();
    }
}
