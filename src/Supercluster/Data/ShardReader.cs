using System.IO.MemoryMappedFiles;

namespace Supercluster.Data;

/// <summary>
/// A memory-mapped, validated shard: the OS pages tokens in on demand, so shards larger than RAM cost nothing to open.
/// Problems with the file (wrong magic, unknown version, truncation, out-of-vocabulary tokens) are bad input naming the file.
/// </summary>
public sealed class ShardReader : IDisposable
{
    readonly MemoryMappedFile _map;
    readonly MemoryMappedViewAccessor _view;

    ShardReader(string path, MemoryMappedFile map, MemoryMappedViewAccessor view, int version, long count)
    {
        FilePath = path; _map = map; _view = view; Version = version; TokenCount = count;
        TokenWidth = ShardFormat.TokenWidth(version);
    }

    public string FilePath { get; }
    public int Version { get; }
    public int TokenWidth { get; }
    public long TokenCount { get; }

    /// <summary>
    /// Opens and checks <paramref name="path"/>. With <paramref name="vocabSize"/> every token is scanned once
    /// (sequential, about a second per GB); without it only the header and length are checked.
    /// </summary>
    public static ShardReader Open(string path, int? vocabSize = null)
    {
        var info = new FileInfo(path);
        if (!info.Exists) throw new BadInputException($"shard {path} does not exist");
        if (info.Length < ShardFormat.HeaderBytes)
            throw new BadInputException($"shard {path} is truncated: {info.Length} bytes, expected at least a {ShardFormat.HeaderBytes}-byte header");
        var map = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        var view = map.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
        try
        {
            int magic = view.ReadInt32(0), version = view.ReadInt32(4), count = view.ReadInt32(8);
            if (magic != ShardFormat.Magic)
                throw new BadInputException($"shard {path} has magic {magic}, expected {ShardFormat.Magic} (not a token shard)");
            if (version != ShardFormat.VersionUInt16 && version != ShardFormat.VersionUInt32)
                throw new BadInputException($"shard {path} has version {version}, expected 1 (uint16) or 2 (uint32)");
            if (count < 0) throw new BadInputException($"shard {path} has a negative token count {count}");
            long needed = ShardFormat.HeaderBytes + (long)count * ShardFormat.TokenWidth(version);
            // llm.c refuses a shard whose size differs from header + count·width in either direction: a header that
            // under-counts would otherwise train on a prefix of the file silently.
            if (info.Length < needed)
                throw new BadInputException($"shard {path} is truncated: {info.Length} bytes, expected {needed} for {count} tokens");
            if (info.Length > needed)
                throw new BadInputException($"shard {path} has {info.Length} bytes, but its header counts {count} tokens ({needed} bytes): " +
                    $"the header under-counts {(info.Length - needed) / (double)ShardFormat.TokenWidth(version):0.#} tokens; re-run prepare");
            var reader = new ShardReader(path, map, view, version, count);
            if (vocabSize is { } vocab) reader.CheckVocab(vocab);
            return reader;
        }
        catch
        {
            view.Dispose(); map.Dispose();
            throw;
        }
    }

    /// <summary>Copies tokens [start, start + dest.Length) into <paramref name="dest"/>.</summary>
    public void Read(long start, Span<int> dest)
    {
        if (start < 0 || start + dest.Length > TokenCount)
            throw new ArgumentOutOfRangeException(nameof(start), $"tokens [{start}, {start + dest.Length}) outside shard {FilePath} of {TokenCount}");
        long offset = ShardFormat.HeaderBytes + start * TokenWidth;
        const int Chunk = 1 << 14;
        if (TokenWidth == 2)
        {
            var buf = new ushort[Math.Min(Chunk, dest.Length)];
            for (int done = 0; done < dest.Length;)
            {
                int n = Math.Min(buf.Length, dest.Length - done);
                _view.ReadArray(offset + (long)done * 2, buf, 0, n);
                for (int i = 0; i < n; i++) dest[done + i] = buf[i];
                done += n;
            }
        }
        else
        {
            var buf = new uint[Math.Min(Chunk, dest.Length)];
            for (int done = 0; done < dest.Length;)
            {
                int n = Math.Min(buf.Length, dest.Length - done);
                _view.ReadArray(offset + (long)done * 4, buf, 0, n);
                for (int i = 0; i < n; i++) dest[done + i] = buf[i] > int.MaxValue ? -1 : (int)buf[i];
                done += n;
            }
        }
    }

    /// <summary>Token at <paramref name="index"/>.</summary>
    public int this[long index]
    {
        get
        {
            Span<int> one = stackalloc int[1];
            Read(index, one);
            return one[0];
        }
    }

    void CheckVocab(int vocabSize)
    {
        var buf = new int[1 << 16];
        for (long start = 0; start < TokenCount; start += buf.Length)
        {
            var span = buf.AsSpan(0, (int)Math.Min(buf.Length, TokenCount - start));
            Read(start, span);
            for (int i = 0; i < span.Length; i++)
                if ((uint)span[i] >= (uint)vocabSize)
                    throw new BadInputException($"shard {FilePath} has token {(uint)span[i]} at position {start + i}, expected ids below vocab size {vocabSize}");
        }
    }

    public void Dispose()
    {
        _view.Dispose();
        _map.Dispose();
    }
}
