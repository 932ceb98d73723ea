using System.Runtime.CompilerServices;
using Microsoft.Win32.SafeHandles;
using Supercluster.Data.Pipeline;

namespace Supercluster.Data;

/// <summary>
/// Documents → train/val shards in the staging folder. Document <c>id</c> (its position in the input, 0-based) goes to
/// val iff <see cref="Preparer.IsVal"/>(id): the split of a document does not depend on which others are removed, so
/// rank 0 writes its own documents into the shards as pass 1 makes them, and pass 2 only compacts them in place
/// (<see cref="Compact"/>: removed documents leave, later ones move up) and appends the other ranks' spilled documents.
/// When no document ends in val, the last one moves there (<see cref="Finish"/>).
/// </summary>
sealed class ShardSink : IDisposable
{
    readonly double _fraction;
    readonly int _width;
    readonly byte[] _eot;
    byte[] _next = new byte[4096];
    int _nextLength;
    long _kept, _lastTokens;
    bool _compactionAhead;

    /// <param name="compactionAhead">pass 2 may remove documents written before it: no shard is committed until <see cref="Compact"/>.</param>
    public ShardSink(string dir, PrepareOptions options, int version, int eot, bool compactionAhead)
    {
        _fraction = options.ValFraction;
        _width = ShardFormat.TokenWidth(version);
        _eot = new byte[_width];
        ShardFormat.Encode([eot], _eot, _width);
        Train = new SplitStream(dir, "train", version, options.ShardTokens);
        Val = new SplitStream(dir, "val", version, options.ShardTokens);
        _compactionAhead = compactionAhead;
        UpdateCommits();
    }

    public SplitStream Train { get; }
    public SplitStream Val { get; }

    SplitStream SplitOf(long id) => _fraction > 0 && Preparer.IsVal(id, _fraction) ? Val : Train;

    /// <summary>Document <paramref name="id"/>'s tokens, after every document with a smaller id.</summary>
    public void Add(long id, ReadOnlySpan<int> tokens) { ShardFormat.Encode(tokens, Next(tokens.Length), _width); Push(id); }

    /// <summary>A buffer for the next document's <paramref name="tokens"/> tokens, encoded; <see cref="Push"/> appends it.</summary>
    public Span<byte> Next(int tokens)
    {
        int bytes = tokens * _width;
        if (_next.Length < bytes) _next = new byte[Math.Max(bytes, 2 * _next.Length)];
        _nextLength = bytes;
        return _next.AsSpan(0, bytes);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // once per document in a serial loop: no slow first tier
    public void Push(long id)
    {
        var split = SplitOf(id);
        split.Append(_next.AsSpan(0, _nextLength));
        split.Append(_eot);
        split.Documents++;
        _kept++;
        _lastTokens = _nextLength / _width + 1;
        if (split == Val && Val.Documents == 1) UpdateCommits();
    }

    /// <summary>
    /// Pass 2 over the documents added so far, in order (<paramref name="documents"/>: rank 0's index, ordinal = id):
    /// those <paramref name="removed"/> names leave the shards, the rest move up to close the gaps. Moves go by runs of
    /// consecutive kept documents of a split, each read and written in blocks: the shards' pages are rewritten where
    /// they are, with no second copy of the corpus in memory or on disk.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // once per run over every document: no slow first tier
    public void Compact(IEnumerable<RankSpill.Record> documents, Func<RankSpill.Record, bool> removed)
    {
        Train.Flush();
        Val.Flush();
        var splits = new[] { Train, Val };
        Span<long> from = stackalloc long[2], to = stackalloc long[2], runFrom = stackalloc long[2], runTo = stackalloc long[2], runLength = stackalloc long[2], docs = stackalloc long[2];
        from.Clear(); to.Clear(); runLength.Clear(); docs.Clear();
        _kept = 0;
        foreach (var doc in documents)
        {
            int s = SplitOf(doc.Ordinal) == Val ? 1 : 0;
            long n = doc.Tokens + 1L;
            if (removed(doc)) { from[s] += n; continue; }
            if (runLength[s] > 0 && runFrom[s] + runLength[s] == from[s] && runTo[s] + runLength[s] == to[s]) runLength[s] += n;
            else
            {
                if (runLength[s] > 0) splits[s].Move(runFrom[s], runTo[s], runLength[s]);
                (runFrom[s], runTo[s], runLength[s]) = (from[s], to[s], n);
            }
            from[s] += n;
            to[s] += n;
            docs[s]++;
            _kept++;
            _lastTokens = n;
        }
        for (int s = 0; s < 2; s++)
        {
            if (from[s] != splits[s].Tokens) throw new InvalidOperationException($"{splits[s].Name}: the documents hold {from[s]} tokens, the shards {splits[s].Tokens}");
            if (runLength[s] > 0) splits[s].Move(runFrom[s], runTo[s], runLength[s]);
            splits[s].Truncate(to[s]);
            splits[s].Documents = docs[s];
        }
        _compactionAhead = false;
        UpdateCommits();
    }

    /// <summary>
    /// Full shards are committed while later ones fill, unless pass 2 may still move their tokens (compaction ahead) or
    /// the last document may still have to move from train to val (no val document yet).
    /// </summary>
    void UpdateCommits() => Train.CommitWhenFull = Val.CommitWhenFull = !_compactionAhead && (_fraction == 0 || Val.Documents > 0);

    /// <summary>Moves the last document to val when val would otherwise be empty, commits the last shards; <paramref name="documentsRead"/> names the empty corpus.</summary>
    public (IReadOnlyList<ShardInfo> Train, IReadOnlyList<ShardInfo> Val) Finish(long documentsRead)
    {
        if (_compactionAhead) throw new InvalidOperationException("documents added before pass 2 were not compacted");
        if (_kept == 0)
            throw new BadInputException(documentsRead == 0
                ? "the corpus is empty: no documents found in the inputs"
                : $"the corpus is empty: none of the {documentsRead:N0} documents read is left after empty-text removal, filters and deduplication");
        if (_fraction > 0 && _kept >= 2 && Val.Documents == 0)
        {
            // Val is empty, so the last document is train's last (no train shard was committed meanwhile: UpdateCommits).
            var last = new byte[_lastTokens * _width];
            Train.ReadAt(Train.Tokens - _lastTokens, last);
            Train.Truncate(Train.Tokens - _lastTokens);
            Train.Documents--;
            Val.Append(last);
            Val.Documents++;
        }
        return (Train.Finish(), Val.Finish());
    }

    public void Dispose() { Train.Dispose(); Val.Dispose(); }
}

/// <summary>
/// One split's shards as one stream of tokens: token p lies in shard p / S (S = shard tokens) at byte
/// header + (p mod S)·width of <c>SPLIT_NNNNNN.bin.tmp</c>. Appends are buffered; <see cref="Move"/> and
/// <see cref="Truncate"/> let pass 2 compact the stream in place. A shard is committed (header, fsync, rename to its
/// final name) in the background once full when <see cref="CommitWhenFull"/>, else by <see cref="Finish"/>: readers
/// never see a shard that is not complete.
/// </summary>
sealed class SplitStream(string dir, string split, int version, long shardTokens) : IDisposable
{
    readonly int _width = ShardFormat.TokenWidth(version);
    readonly List<SafeFileHandle?> _files = [];
    readonly List<Task> _commits = [];
    readonly byte[] _buffer = new byte[1 << 20];
    int _buffered, _committed;
    byte[]? _moveBuffer;

    public string Name => split;
    /// <summary>Tokens in the stream, buffered ones included.</summary>
    public long Tokens { get; private set; }
    public long Documents { get; set; }
    public bool CommitWhenFull { get; set; }

    string TempPath(int k) => Path.Combine(dir, FileName(k) + ".tmp");
    string FileName(int k) => $"{split}_{k:D6}.bin";
    int Shards => (int)((Tokens + shardTokens - 1) / shardTokens);

    SafeFileHandle Shard(int k)
    {
        if (k < _committed) throw new InvalidOperationException($"{FileName(k)} is committed");
        while (_files.Count <= k) _files.Add(null);
        return _files[k] ??= File.OpenHandle(TempPath(k), FileMode.CreateNew, FileAccess.ReadWrite);
    }

    /// <summary>Appends whole encoded tokens (<see cref="ShardFormat.Encode"/>).</summary>
    public void Append(ReadOnlySpan<byte> bytes)
    {
        while (bytes.Length > 0)
        {
            int n = Math.Min(bytes.Length, _buffer.Length - _buffered); // whole tokens: both are multiples of the width
            bytes[..n].CopyTo(_buffer.AsSpan(_buffered));
            _buffered += n;
            Tokens += n / _width;
            bytes = bytes[n..];
            if (_buffered == _buffer.Length) Flush();
        }
    }

    /// <summary>Writes the buffered tokens to their shards and commits the shards that are full, when allowed.</summary>
    public void Flush()
    {
        if (_buffered > 0) WriteAt(Tokens - _buffered / _width, _buffer.AsSpan(0, _buffered));
        _buffered = 0;
        if (!CommitWhenFull) return;
        for (int full = (int)(Tokens / shardTokens); _committed < full;) CommitNext();
    }

    /// <summary>Tokens in shard <paramref name="k"/>: S but in the last.</summary>
    long TokensIn(int k) => Math.Min(shardTokens, Tokens - (long)k * shardTokens);

    /// <summary>Commits the first shard not yet committed, on a background task; its handle goes with it.</summary>
    void CommitNext()
    {
        int k = _committed;
        var (h, tokens, temp, name) = (Shard(k), TokensIn(k), TempPath(k), Path.Combine(dir, FileName(k)));
        _files[k] = null;
        _committed++;
        _commits.Add(Task.Run(() => Commit(h, tokens, temp, name)));
    }

    void WriteAt(long at, ReadOnlySpan<byte> bytes)
    {
        while (bytes.Length > 0)
        {
            int k = (int)(at / shardTokens);
            long within = at - k * shardTokens;
            int n = (int)Math.Min(bytes.Length / _width, shardTokens - within);
            RandomAccess.Write(Shard(k), bytes[..(n * _width)], ShardFormat.HeaderBytes + within * _width);
            at += n;
            bytes = bytes[(n * _width)..];
        }
    }

    /// <summary>Reads tokens <paramref name="at"/>… into <paramref name="into"/> (whole tokens; buffered ones are flushed first).</summary>
    public void ReadAt(long at, Span<byte> into)
    {
        if (at < 0 || at + into.Length / _width > Tokens) throw new ArgumentOutOfRangeException(nameof(at), $"{split}: tokens {at}+{into.Length / _width} beyond {Tokens}");
        if (_buffered > 0) Flush();
        while (into.Length > 0)
        {
            int k = (int)(at / shardTokens);
            long within = at - k * shardTokens;
            int n = (int)Math.Min(into.Length / _width, shardTokens - within);
            var part = into[..(n * _width)];
            for (int got = 0; got < part.Length;)
            {
                int r = RandomAccess.Read(Shard(k), part[got..], ShardFormat.HeaderBytes + within * _width + got);
                if (r <= 0) throw new EndOfStreamException($"{TempPath(k)}: ends before token {at + got / _width}");
                got += r;
            }
            at += n;
            into = into[(n * _width)..];
        }
    }

    /// <summary>Copies <paramref name="count"/> tokens from <paramref name="from"/> down to <paramref name="to"/> (≤ from), in blocks front to back.</summary>
    public void Move(long from, long to, long count)
    {
        if (to > from) throw new ArgumentException($"{split}: tokens move up only ({from} → {to})");
        if (to == from) return;
        _moveBuffer ??= new byte[4 << 20];
        long per = _moveBuffer.Length / _width;
        for (long done = 0; done < count; done += per)
        {
            var block = _moveBuffer.AsSpan(0, (int)(Math.Min(per, count - done) * _width));
            ReadAt(from + done, block); // read whole before written: a block may overlap its own destination
            WriteAt(to + done, block);
        }
    }

    /// <summary>Drops every token from <paramref name="tokens"/> on (shards past the new end are deleted).</summary>
    public void Truncate(long tokens)
    {
        if (tokens > Tokens) throw new ArgumentOutOfRangeException(nameof(tokens), $"{split}: {tokens} tokens, the stream holds {Tokens}");
        Flush();
        int before = Shards;
        Tokens = tokens;
        for (int k = Shards; k < Math.Min(before, _files.Count); k++)
        {
            _files[k]?.Dispose();
            _files[k] = null;
            File.Delete(TempPath(k));
        }
        if (Shards > 0)
        {
            int last = Shards - 1;
            RandomAccess.SetLength(Shard(last), ShardFormat.HeaderBytes + TokensIn(last) * _width);
        }
    }

    void Commit(SafeFileHandle file, long tokens, string temp, string name)
    {
        using (file)
        {
            RandomAccess.Write(file, ShardFormat.Header(version, tokens), 0);
            RandomAccess.FlushToDisk(file);
        }
        File.Move(temp, name, overwrite: true);
    }

    /// <summary>Commits every shard not yet committed and waits for all commits; returns the shards in order.</summary>
    public IReadOnlyList<ShardInfo> Finish()
    {
        Flush();
        int shards = Shards;
        while (_committed < shards) CommitNext();
        // A failed commit (disk full) fails the run here, with its own exception.
        try { Task.WaitAll(_commits); }
        catch (AggregateException e) { System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(e.InnerExceptions[0]); }
        var list = new List<ShardInfo>(shards);
        for (int k = 0; k < shards; k++) list.Add(new ShardInfo(FileName(k), TokensIn(k)));
        return list;
    }

    public void Dispose()
    {
        foreach (var f in _files) f?.Dispose();
        _files.Clear();
        // On failure: let background commits end before the staging folder is deleted; their errors are not the first.
        try { Task.WaitAll(_commits); } catch (AggregateException) { }
    }
}
