using System.Buffers.Binary;
using System.IO.MemoryMappedFiles;
using System.Runtime.InteropServices;

namespace Supercluster.Data.Pipeline;

/// <summary>
/// One rank's documents after filtering, on disk in the staging folder so memory stays bounded:
/// <c>rank-R.idx</c> (32 bytes per document: ordinal, token count, characters, 128-bit exact key),
/// <c>rank-R.tok</c> (int32 tokens, back to back) and, for near deduplication, <c>rank-R.sig</c>
/// (P uint64 MinHash values per document; first value <see cref="ulong.MaxValue"/> when the document has no words).
/// Other ranks read these files (by memory map) after this rank closes them: the staging folder is on the shared
/// filesystem that holds the output.
/// </summary>
public sealed class RankSpill : IDisposable
{
    public const int IndexBytes = 32;
    readonly FileStream _idx, _tok;
    readonly FileStream? _sig;
    readonly byte[] _record = new byte[IndexBytes];

    public RankSpill(string dir, int rank, int permutations)
    {
        _idx = Create(IndexPath(dir, rank));
        _tok = Create(TokenPath(dir, rank));
        if (permutations > 0) _sig = Create(SignaturePath(dir, rank));
        Permutations = permutations;
    }

    public int Permutations { get; }
    public long Count { get; private set; }

    public static string IndexPath(string dir, int rank) => Path.Combine(dir, $"rank-{rank}.idx");
    public static string TokenPath(string dir, int rank) => Path.Combine(dir, $"rank-{rank}.tok");
    public static string SignaturePath(string dir, int rank) => Path.Combine(dir, $"rank-{rank}.sig");

    static FileStream Create(string path) => new(path, FileMode.CreateNew, FileAccess.Write, FileShare.Read, 1 << 20);

    public void Append(long ordinal, int[] tokens, int chars, UInt128 key, ulong[]? signature)
    {
        BinaryPrimitives.WriteInt64LittleEndian(_record, ordinal);
        BinaryPrimitives.WriteInt32LittleEndian(_record.AsSpan(8), tokens.Length);
        BinaryPrimitives.WriteInt32LittleEndian(_record.AsSpan(12), chars);
        BinaryPrimitives.WriteUInt128LittleEndian(_record.AsSpan(16), key);
        _idx.Write(_record);
        _tok.Write(MemoryMarshal.AsBytes(tokens.AsSpan()));
        if (_sig is not null)
        {
            if (signature is null) { var none = new ulong[Permutations]; none[0] = ulong.MaxValue; signature = none; }
            _sig.Write(MemoryMarshal.AsBytes(signature.AsSpan()));
        }
        Count++;
    }

    public void Dispose()
    {
        foreach (var f in new[] { _idx, _tok, _sig })
        {
            if (f is null) continue;
            f.Flush(); // no fsync: staging files are never published, and a crash discards the staging folder anyway
            f.Dispose();
        }
    }

    /// <summary>A document's index record.</summary>
    public readonly record struct Record(long Ordinal, int Tokens, int Chars, UInt128 Key);

    public static Record Parse(ReadOnlySpan<byte> b) => new(
        BinaryPrimitives.ReadInt64LittleEndian(b), BinaryPrimitives.ReadInt32LittleEndian(b[8..]),
        BinaryPrimitives.ReadInt32LittleEndian(b[12..]), BinaryPrimitives.ReadUInt128LittleEndian(b[16..]));

    /// <summary>Streams a rank's index records in order.</summary>
    public static IEnumerable<Record> ReadIndex(string dir, int rank)
    {
        using var f = new FileStream(IndexPath(dir, rank), FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20);
        var buf = new byte[IndexBytes];
        while (f.Read(buf) == IndexBytes) yield return Parse(buf);
    }
}

/// <summary>Random access to every rank's spilled signatures by global document id (memory-mapped, binary search on ordinals).</summary>
public sealed class SignatureStore : IDisposable
{
    readonly (MemoryMappedFile? Idx, MemoryMappedViewAccessor? IdxView, long Count, MemoryMappedFile? Sig, MemoryMappedViewAccessor? SigView)[] _ranks;
    readonly long[] _offsets;
    readonly int _p;

    public SignatureStore(string dir, long[] rankOffsets, int permutations)
    {
        _offsets = rankOffsets;
        _p = permutations;
        _ranks = new (MemoryMappedFile?, MemoryMappedViewAccessor?, long, MemoryMappedFile?, MemoryMappedViewAccessor?)[rankOffsets.Length - 1];
        for (int r = 0; r < _ranks.Length; r++)
        {
            long n = new FileInfo(RankSpill.IndexPath(dir, r)).Length / RankSpill.IndexBytes;
            if (n == 0) continue;
            var idx = MemoryMappedFile.CreateFromFile(RankSpill.IndexPath(dir, r), FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
            var sig = MemoryMappedFile.CreateFromFile(RankSpill.SignaturePath(dir, r), FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
            _ranks[r] = (idx, idx.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read), n, sig, sig.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read));
        }
    }

    /// <summary>Signature of document <paramref name="id"/> into <paramref name="dest"/> (length P).</summary>
    public void Read(long id, ulong[] dest)
    {
        int r = RankOf(_offsets, id);
        var (_, idxView, n, _, sigView) = _ranks[r];
        long ordinal = id - _offsets[r], lo = 0, hi = n - 1;
        while (lo <= hi)
        {
            long mid = (lo + hi) / 2, o = idxView!.ReadInt64(mid * RankSpill.IndexBytes);
            if (o == ordinal) { sigView!.ReadArray(mid * _p * 8, dest, 0, _p); return; }
            if (o < ordinal) lo = mid + 1; else hi = mid - 1;
        }
        throw new InvalidOperationException($"document {id} has no spilled signature");
    }

    /// <summary>The rank whose ids contain <paramref name="id"/>: the last r with offsets[r] ≤ id (ranks without documents have equal offsets).</summary>
    public static int RankOf(long[] offsets, long id)
    {
        int lo = 0, hi = offsets.Length - 2;
        while (lo < hi)
        {
            int mid = (lo + hi + 1) / 2;
            if (offsets[mid] <= id) lo = mid; else hi = mid - 1;
        }
        return lo;
    }

    public void Dispose()
    {
        foreach (var (idx, iv, _, sig, sv) in _ranks) { iv?.Dispose(); idx?.Dispose(); sv?.Dispose(); sig?.Dispose(); }
    }
}
