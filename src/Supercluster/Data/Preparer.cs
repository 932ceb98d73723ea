using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using Supercluster.Data.Pipeline;
using Supercluster.Distributed;
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
    /// <summary>Most characters of text in flight (read, not yet spilled): the memory bound of a run, whatever the corpus size.</summary>
    public long ChunkChars { get; init; } = 8L << 20;
    public int Threads { get; init; } = Environment.ProcessorCount;
    /// <summary>Where the text came from, recorded in meta.json.</summary>
    public string? Source { get; init; }
    /// <summary>Which duplicates are removed; exact duplicates are counted in every mode.</summary>
    public DedupMode Dedup { get; init; } = DedupMode.None;
    /// <summary>Jaccard similarity of word n-gram sets at or above which two documents are near duplicates.</summary>
    public double NearThreshold { get; init; } = 0.8;
    public int NearPermutations { get; init; } = 128;
    public int NearNgram { get; init; } = 5;
    /// <summary>JSONL file that receives the duplicate clusters (document ids in input order).</summary>
    public string? DedupReport { get; init; }
    /// <summary>Quality rules; null = off.</summary>
    public QualityFilter? Filter { get; init; }
    public bool ScrubPii { get; init; }
    /// <summary>Record field conditions; null = none.</summary>
    public FieldFilter? Fields { get; init; }
}

/// <summary><c>--dedup</c> modes: none counts exact duplicates only, exact removes them, near removes exact then near duplicates.</summary>
public enum DedupMode { None, Exact, Near }

/// <summary>Outcome of a run. <see cref="PeakChunkChars"/> is the most text held at once (≤ ChunkChars, or one batch when a batch alone exceeds it).</summary>
public sealed record PrepareResult(DatasetMeta Meta, TimeSpan Elapsed, long PeakChunkChars)
{
    /// <summary>Largest peak resident set size over the ranks (VmHWM), bytes; 0 where /proc is missing.</summary>
    public long PeakRssBytes { get; init; }
    public int Ranks { get; init; } = 1;
    /// <summary>Wall seconds of each phase on this rank, in order (pass1, ids, exact, near, assemble, publish): where a run's time goes.</summary>
    public IReadOnlyList<(string Phase, double Seconds)> Phases { get; init; } = [];
    public long Documents => Meta.TrainDocuments + Meta.ValDocuments;
    public long Tokens => Meta.TrainTokens + Meta.ValTokens;
    public double TokensPerSecond => Tokens / Math.Max(Elapsed.TotalSeconds, 1e-9);
}

/// <summary>
/// <c>prepare</c>: documents → field filters → quality filters → PII scrubbing → tokens → deduplication → train/val
/// shards + meta.json, on one or many ranks.
/// Pass 1 (every rank, its own part of the input): documents are processed in chunks of about
/// <see cref="PrepareOptions.ChunkChars"/> characters on all cores and spilled in input order to the staging folder
/// (tokens, exact keys, MinHash signatures), so memory does not grow with the corpus.
/// Deduplication exchanges keys between ranks (<see cref="Deduplicator"/>). Pass 2 (rank 0) streams the spilled
/// documents of rank 0, 1, … in order, skipping removed ones: the shards depend only on the input, not on the number of
/// ranks or threads. Everything is written into a staging folder inside the output folder and moved into place only
/// when the run succeeds (meta.json last): a failed or interrupted run leaves no shard that looks complete.
/// </summary>
public static class Preparer
{
    public static PrepareResult Run(IEnumerable<Document> documents, PrepareOptions options, ProgressLine? progress = null)
        => Run(documents, options, new SingleProcess(), progress, null);

    /// <summary>
    /// Collective over <paramref name="comm"/>: <paramref name="localDocuments"/> are this rank's documents, in input
    /// order, ranks in order (see <see cref="CorpusReader.ReadPart"/>); <paramref name="fraction"/> reports how much of
    /// this rank's input has been read (for the ETA).
    /// </summary>
    public static PrepareResult Run(IEnumerable<Document> localDocuments, PrepareOptions options, ICommunicator comm, ProgressLine? progress, Func<double>? fraction)
    {
        if (options.ValFraction is < 0 or >= 1 || double.IsNaN(options.ValFraction))
            throw new BadInputException($"--val-fraction {options.ValFraction} is out of range; expected 0 <= F < 1");
        if (options.ShardTokens is < 2 or > int.MaxValue)
            throw new BadInputException($"--shard-tokens {options.ShardTokens} is out of range; expected 2..{int.MaxValue} (llm.c headers hold an int32 count)");
        if (options.ChunkChars < 1) throw new ArgumentOutOfRangeException(nameof(options), "ChunkChars must be positive");
        bool near = options.Dedup == DedupMode.Near;
        var minHash = near ? new MinHash(options.NearPermutations, options.NearNgram) : null;
        var lsh = near ? LshBands.Choose(options.NearPermutations, options.NearThreshold) : null;
        var tokenizer = Tokenizers.Create(options.Tokenizer);
        int version = ShardFormat.VersionFor(tokenizer.VocabSize);
        int rank = comm.Rank, world = comm.WorldSize;
        string tag = world > 1 ? $"prepare[{rank}/{world}]" : "prepare";

        bool createdOut = !Directory.Exists(options.OutDir);
        Directory.CreateDirectory(options.OutDir);
        // Rank 0 names the staging folder; the others learn it from the all-gather.
        string? staging = rank == 0 ? Path.Combine(options.OutDir, $".prepare-{Guid.NewGuid():N}") : null;
        if (staging is not null) Directory.CreateDirectory(staging);
        staging = Path.Combine(options.OutDir, Encoding.UTF8.GetString(comm.AllGatherBytes(Encoding.UTF8.GetBytes(staging is null ? "" : Path.GetFileName(staging)))[0]));
        var clock = Stopwatch.StartNew();
        var phases = new List<(string, double)>();
        double lastMark = 0;
        void Mark(string phase) { double now = clock.Elapsed.TotalSeconds; phases.Add((phase, now - lastMark)); lastMark = now; }
        ShardSink? direct = null;
        try
        {
            // ---- pass 1: this rank's documents → filters → tokens, keys, signatures → spill ----
            var stats = new LocalStats();
            long peak = 0, ordinal = 0, localTokens = 0;
            // Rank 0's documents come first in the global order: it writes them into the shards as pass 1 hands them back
            // (ids = its ordinals), and pass 2 compacts them in place when deduplication removes some. Only the other
            // ranks spill tokens, for rank 0 to append in pass 2.
            direct = rank == 0 ? new ShardSink(staging, options, version, tokenizer.EotToken, compactionAhead: options.Dedup != DedupMode.None) : null;
            using (var spill = new RankSpill(staging, rank, near ? options.NearPermutations : 0, tokenWidth: rank == 0 ? 0 : ShardFormat.TokenWidth(version)))
            {
                var work = ProcessInOrder(localDocuments, options.ChunkChars, Math.Max(1, options.Threads),
                    (doc, pii) => Process(doc, options, tokenizer, minHash, pii), stats.Pii, chars => peak = chars);
                foreach (var batch in work)
                {
                    for (int i = 0; i < batch.Outcomes.Length; i++)
                    {
                        var o = batch.Outcomes[i];
                        if (o.RemovedBy is { } rule) stats.Remove(rule, o.Chars);
                        else
                        {
                            spill.Append(ordinal, o.Tokens!, o.Chars, o.Key, o.Signature);
                            direct?.Add(ordinal, o.Tokens);
                            localTokens += o.Tokens!.Length;
                        }
                        ordinal++;
                    }
                    double secs = Math.Max(clock.Elapsed.TotalSeconds, 1e-9);
                    double done = fraction?.Invoke() ?? double.NaN;
                    string eta = done is > 0 and < 1 ? $", {done:P0}, ETA {ProgressLine.Format(TimeSpan.FromSeconds(secs * (1 - done) / done))}" : "";
                    progress?.Update($"{tag}: {ordinal:N0} docs, {localTokens:N0} tokens, {ordinal / secs:N0} docs/s, {localTokens / secs:N0} tokens/s{eta}");
                }
            }
            stats.Read = ordinal;
            Mark("pass1");
            comm.IdleBarrier(); // ranks finish their shares at different times: the first ones wait without taking a core
            Mark("wait");

            // ---- global ids: rank r's documents are offsets[r] … offsets[r+1]−1, in input order ----
            var counts = comm.AllGatherBytes(BitConverter.GetBytes(ordinal)).Select(b => BitConverter.ToInt64(b)).ToArray();
            var offsets = new long[world + 1];
            for (int r = 0; r < world; r++) offsets[r + 1] = offsets[r] + counts[r];
            var allStats = comm.AllGatherBytes(stats.ToBytes()).Select(LocalStats.FromBytes).ToList();
            Mark("ids");

            // ---- deduplication ----
            progress?.Update($"{tag}: deduplicating", force: true);
            var dedup = new Deduplicator(comm, staging, offsets);
            var exact = dedup.Exact();
            var removedExact = RemovedIds(exact);
            Mark("exact");
            List<DuplicateCluster> nearClusters = [];
            if (near)
                nearClusters = dedup.Near(lsh!, options.NearPermutations, options.NearThreshold, removedExact, Math.Max(1, options.Threads));
            var removedNear = RemovedIds(nearClusters);
            if (near) Mark("near");
            long peakRss = comm.AllGatherBytes(BitConverter.GetBytes(PeakRss())).Max(b => BitConverter.ToInt64(b));

            DatasetMeta? meta = null;
            if (rank == 0)
            {
                // ---- pass 2 (rank 0): spilled documents in global order → shards ----
                var removed = new Dictionary<string, HashSet<long>>();
                if (options.Dedup != DedupMode.None) removed["dedup_exact"] = removedExact;
                if (near) removed["dedup_near"] = removedNear;
                var dedupCounts = removed.Keys.ToDictionary(k => k, _ => new StageCount(0, 0, 0));
                using (var sink = direct!)
                {
                    Assemble(staging, offsets, sink, version, removed, dedupCounts);
                    var (trainShards, valShards) = sink.Finish(offsets[world]);
                    var (train, val) = (sink.Train, sink.Val);
                    var removedStats = new SortedDictionary<string, StageCount>(StringComparer.Ordinal);
                    foreach (var s2 in allStats)
                        foreach (var (rule, c) in s2.Removed)
                            removedStats[rule] = removedStats.TryGetValue(rule, out var old) ? old with { Documents = old.Documents + c.Docs, Characters = old.Characters + c.Chars } : new StageCount(c.Docs, c.Chars);
                    foreach (var (stage, sc) in dedupCounts) removedStats[stage] = sc;
                    var pipeline = new PipelineReport
                    {
                        DocumentsRead = offsets[world],
                        DocumentsKept = train.Documents + val.Documents,
                        Removed = removedStats,
                        ExactDuplicatesFound = removedExact.Count,
                        NearDuplicatesFound = near ? removedNear.Count : null,
                        PiiReplaced = options.ScrubPii ? new(PiiScrubber.Kinds.Select((k, i) => (k, allStats.Sum(s2 => s2.Pii[i]))).ToDictionary(), StringComparer.Ordinal) : null,
                        Dedup = options.Dedup.ToString().ToLowerInvariant(),
                        Near = near ? new NearSettings(options.NearThreshold, options.NearNgram, options.NearPermutations, lsh!.Bands, lsh.Rows) : null,
                        FilterThresholds = options.Filter is { } f ? new(QualityFilter.Rules.ToDictionary(r => r.Name, r => f[r.Name]), StringComparer.Ordinal) : null,
                    };
                    meta = new DatasetMeta(tokenizer.Name, tokenizer.VocabSize, tokenizer.EotToken, train.Tokens, val.Tokens)
                    {
                        TokenWidth = ShardFormat.TokenWidth(version),
                        TrainDocuments = train.Documents,
                        ValDocuments = val.Documents,
                        TrainShards = trainShards,
                        ValShards = valShards,
                        Source = options.Source,
                        Pipeline = pipeline,
                    };
                    if (options.DedupReport is { } reportPath) WriteReport(reportPath, exact, nearClusters, options.Dedup);
                }
            }
            comm.IdleBarrier(); // every rank has closed its maps of the staging files (the others wait out rank 0's pass 2)
            Mark("assemble");
            if (rank == 0) Publish(staging, options.OutDir, meta!);
            comm.Barrier();
            Mark("publish");
            meta ??= DatasetMeta.Load(options.OutDir);
            progress?.Done($"{tag}: {meta.TrainDocuments + meta.ValDocuments:N0} docs, {meta.TrainTokens + meta.ValTokens:N0} tokens in {ProgressLine.Format(clock.Elapsed)}");
            return new PrepareResult(meta, clock.Elapsed, peak) { PeakRssBytes = peakRss, Ranks = world, Phases = phases };
        }
        catch
        {
            progress?.Done();
            direct?.Dispose();
            if (rank == 0)
                try
                {
                    if (Directory.Exists(staging)) Directory.Delete(staging, recursive: true);
                    if (createdOut && !Directory.EnumerateFileSystemEntries(options.OutDir).Any()) Directory.Delete(options.OutDir);
                }
                catch (IOException) { /* best effort: the failure itself matters more */ }
            throw;
        }
    }

    /// <summary>A run of consecutive documents, the unit of pass 1's work queue, and what became of each.</summary>
    sealed class Batch(List<Document> documents, long chars)
    {
        public readonly List<Document> Documents = documents;
        public readonly long Chars = chars;
        public readonly Outcome[] Outcomes = new Outcome[documents.Count];
        public readonly ManualResetEventSlim Done = new();
        public Exception? Error;
    }

    /// <summary>Most characters in one batch: small enough that the cores start after the first few documents are read
    /// and finish together (a barrier per 8 M-character chunk left one core idle behind the chunk's last documents).</summary>
    const long BatchChars = 1 << 16;

    /// <summary>
    /// Pass 1's documents processed by <paramref name="workers"/> threads and handed back in input order, batch by
    /// batch. A reader thread parses the input into batches of about <see cref="BatchChars"/> characters and queues
    /// them; each worker takes the oldest waiting batch; the caller gets batch k once it is done, while later ones are
    /// still being read and processed. Text in flight (read, not yet handed back) stays within
    /// <paramref name="budgetChars"/>, or one batch when a batch alone exceeds it: the memory bound of a run.
    /// <paramref name="peak"/> receives the largest amount in flight so far. Errors surface in input order (the reader's
    /// unwrapped, e.g. bad input). <paramref name="pii"/> receives the workers' counts once the enumeration ends.
    /// </summary>
    static IEnumerable<Batch> ProcessInOrder(IEnumerable<Document> documents, long budgetChars, int workers,
        Func<Document, long[], Outcome> process, long[] pii, Action<long> peak)
    {
        using var work = new BlockingCollection<Batch>();
        using var order = new BlockingCollection<Batch>();
        using var stop = new CancellationTokenSource();
        var gate = new object();
        long inFlight = 0, most = 0;
        long batchChars = Math.Clamp(budgetChars / (4L * workers), 1, BatchChars); // a small budget still feeds every worker
        Exception? readError = null;

        var reader = new Thread(() =>
        {
            try
            {
                var docs = new List<Document>();
                long chars = 0;
                foreach (var doc in documents)
                {
                    docs.Add(doc);
                    chars += doc.Text.Length;
                    if (chars < batchChars) continue;
                    Submit(new Batch(docs, chars));
                    (docs, chars) = ([], 0);
                }
                if (docs.Count > 0) Submit(new Batch(docs, chars));
            }
            catch (OperationCanceledException) when (stop.IsCancellationRequested) { /* the caller stopped early */ }
            catch (Exception e) { readError = e; }
            finally { order.CompleteAdding(); work.CompleteAdding(); }
        }) { IsBackground = true, Name = "prepare-reader" };

        void Submit(Batch batch)
        {
            lock (gate)
            {
                while (inFlight > 0 && inFlight + batch.Chars > budgetChars)
                {
                    stop.Token.ThrowIfCancellationRequested();
                    Monitor.Wait(gate);
                }
                stop.Token.ThrowIfCancellationRequested();
                inFlight += batch.Chars;
                most = Math.Max(most, inFlight);
            }
            order.Add(batch);
            work.Add(batch);
        }

        var threads = new Thread[workers];
        for (int w = 0; w < workers; w++)
            threads[w] = new Thread(() =>
            {
                var counts = new long[pii.Length];
                try
                {
                    foreach (var batch in work.GetConsumingEnumerable(stop.Token))
                    {
                        try { for (int i = 0; i < batch.Documents.Count; i++) batch.Outcomes[i] = process(batch.Documents[i], counts); }
                        catch (Exception e) { batch.Error = e; }
                        batch.Done.Set();
                    }
                }
                catch (OperationCanceledException) { /* the caller stopped early */ }
                lock (pii) for (int k = 0; k < counts.Length; k++) pii[k] += counts[k];
            }) { IsBackground = true, Name = "prepare-worker" };
        reader.Start();
        foreach (var t in threads) t.Start();
        try
        {
            foreach (var batch in order.GetConsumingEnumerable())
            {
                batch.Done.Wait();
                batch.Done.Dispose();
                if (batch.Error is { } e) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(e);
                lock (gate) peak(most);
                yield return batch;
                lock (gate) { inFlight -= batch.Chars; Monitor.PulseAll(gate); }
            }
        }
        finally
        {
            stop.Cancel();
            lock (gate) Monitor.PulseAll(gate);
            reader.Join();
            foreach (var t in threads) t.Join();
        }
        if (readError is not null) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(readError);
    }

    /// <summary>What pass 1 made of one document: removed by a rule, or its tokens, exact key and signature.</summary>
    readonly record struct Outcome(string? RemovedBy, int Chars, int[]? Tokens, UInt128 Key, uint[]? Signature);

    [ThreadStatic] static List<(int Start, int Length)>? t_words;

    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // a prepare run is seconds long: no slow first tier
    static Outcome Process(Document doc, PrepareOptions options, TextTokenizer tokenizer, MinHash? minHash, long[] pii)
    {
        var text = doc.Text;
        if (options.Fields?.Check(doc) is { } field) return new("fields:" + field, text.Length, null, default, null);
        if (string.IsNullOrWhiteSpace(text)) return new("empty", text.Length, null, default, null);
        if (options.Filter?.Check(text) is { } rule) return new("filter:" + rule, text.Length, null, default, null);
        if (options.ScrubPii) text = PiiScrubber.Scrub(text, pii);
        var words = minHash is null ? null : t_words ??= [];
        var normalized = TextNormalizer.Normalize(text, words); // near dedup: the word spans come from the same pass
        var signature = minHash?.Signature(normalized, CollectionsMarshal.AsSpan(words));
        return new(null, text.Length, tokenizer.Encode(text), TextNormalizer.ExactKey(normalized), signature);
    }

    /// <summary>
    /// Pass 2 (rank 0): its own documents, written in pass 1, are compacted in place when deduplication removed some;
    /// every other rank's spill follows in rank order, removed documents skipped. Counts the removals per stage.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // a prepare run is seconds long: no slow first tier
    static void Assemble(string staging, long[] offsets, ShardSink sink, int version, Dictionary<string, HashSet<long>> removed,
        Dictionary<string, StageCount> dedupCounts)
    {
        int width = ShardFormat.TokenWidth(version);
        var stages = removed.ToArray();
        bool Removed(long id, RankSpill.Record rec)
        {
            foreach (var (name, ids) in stages)
                if (ids.Contains(id))
                {
                    var c = dedupCounts[name];
                    dedupCounts[name] = new StageCount(c.Documents + 1, c.Characters + rec.Chars, c.Tokens + rec.Tokens + 1);
                    return true;
                }
            return false;
        }
        if (stages.Length > 0) sink.Compact(RankSpill.ReadIndex(staging, 0), rec => Removed(rec.Ordinal, rec));
        for (int r = 1; r < offsets.Length - 1; r++)
        {
            using var tok = new FileStream(RankSpill.TokenPath(staging, r), FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20);
            foreach (var rec in RankSpill.ReadIndex(staging, r))
            {
                long id = offsets[r] + rec.Ordinal;
                if (Removed(id, rec)) { tok.Seek((long)width * rec.Tokens, SeekOrigin.Current); continue; }
                tok.ReadExactly(sink.Next(rec.Tokens));
                sink.Push(id);
            }
        }
    }

    /// <summary>One JSON line per cluster: <c>{"stage","kept","removed":[ids]}</c>; ids are positions in the input (0-based).</summary>
    static void WriteReport(string path, List<DuplicateCluster> exact, List<DuplicateCluster> near, DedupMode mode)
    {
        var temp = path + ".tmp";
        using (var f = new StreamWriter(temp, false, new UTF8Encoding(false)))
        {
            foreach (var c in exact.Concat(near))
                f.WriteLine(JsonSerializer.Serialize(new { stage = c.Stage, kept = c.Kept, removed = c.Removed, applied = mode != DedupMode.None }));
            f.Flush();
            ((FileStream)f.BaseStream).Flush(flushToDisk: true);
        }
        File.Move(temp, path, overwrite: true);
    }

    /// <summary>Peak resident set size (VmHWM of /proc/self/status) in bytes, 0 when unavailable.</summary>
    public static long PeakRss()
    {
        try
        {
            var line = File.ReadLines("/proc/self/status").FirstOrDefault(l => l.StartsWith("VmHWM:"));
            return line is null ? 0 : long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) * 1024;
        }
        catch (IOException) { return 0; }
    }

    static HashSet<long> RemovedIds(List<DuplicateCluster> clusters)
    {
        var ids = new HashSet<long>();
        foreach (var c in clusters) foreach (var id in c.Removed) ids.Add(id);
        return ids;
    }

    /// <summary>Per-rank counts of pass 1, all-gathered to rank 0.</summary>
    sealed class LocalStats
    {
        public long Read;
        public readonly long[] Pii = new long[PiiScrubber.Kinds.Length];
        // Counts as a class in a plain dictionary: instantiations the runtime already has compiled (a sorted dictionary of
        // tuples cost ~25 ms of JIT in every process that removes a document; the report sorts the rules itself).
        public readonly Dictionary<string, Count> Removed = new(StringComparer.Ordinal);
        public sealed class Count { public long Docs, Chars; }
        public void Remove(string rule, long chars)
        {
            if (!Removed.TryGetValue(rule, out var c)) Removed[rule] = c = new Count();
            c.Docs++;
            c.Chars += chars;
        }
        // Binary, not JSON: System.Text.Json's first serialisation of a type costs ~0.1 s of start-up in every process.
        public byte[] ToBytes()
        {
            var ms = new MemoryStream();
            using var w = new BinaryWriter(ms);
            w.Write(Read);
            foreach (var p in Pii) w.Write(p);
            w.Write(Removed.Count);
            foreach (var (rule, c) in Removed) { w.Write(rule); w.Write(c.Docs); w.Write(c.Chars); }
            w.Flush();
            return ms.ToArray();
        }

        public static LocalStats FromBytes(byte[] b)
        {
            using var r = new BinaryReader(new MemoryStream(b));
            var s = new LocalStats { Read = r.ReadInt64() };
            for (int i = 0; i < s.Pii.Length; i++) s.Pii[i] = r.ReadInt64();
            for (int n = r.ReadInt32(); n > 0; n--) s.Removed[r.ReadString()] = new Count { Docs = r.ReadInt64(), Chars = r.ReadInt64() };
            return s;
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
}
