using System.Buffers.Binary;
using System.IO.MemoryMappedFiles;
using System.Runtime.InteropServices;

namespace Supercluster.Data.Pipeline;

/// <summary>
/// One rank's documents after filtering, on disk in the staging folder so memory stays bounded:
/// <c>rank-R.idx</c> (32 bytes per document: ordinal, token count, characters, 128-bit exact key),
/// <c>rank-R.tok</c> (tokens back to back, encoded as the shards store them) and, for near deduplication, <c>rank-R.sig</c>
/// (P uint32 MinHash values per document; the first two <see cref="uint.MaxValue"/> when the document has no words).
/// Other ranks read these files (by memory map) after this rank closes them: the staging folder is on the shared
/// filesystem that holds the output.
/// </summary>
public sealed class RankSpill : IDisposable
{
    public const int IndexBytes = 32;
    readonly FileStream _idx;
    readonly FileStream? _tok;
    readonly FileStream? _sig;
    readonly byte[] _record = new byte[IndexBytes];
    readonly int _tokenWidth;
    byte[] _encoded = new byte[4096];
    uint[]? _none;

    /// <summary>The signature spilled for a document without words (a real one has two equal maxima with probability 2⁻⁶⁴).</summary>
    static uint[] NoWords(int permutations) { var s = new uint[permutations]; s[0] = uint.MaxValue; if (s.Length > 1) s[1] = uint.MaxValue; return s; }

    /// <summary>Whether <paramref name="signature"/> is the one spilled for a document without words.</summary>
    public static bool HasNoWords(ReadOnlySpan<uint> signature) => signature[0] == uint.MaxValue && (signature.Length == 1 || signature[1] == uint.MaxValue);

    /// <summary>
    /// <paramref name="tokenWidth"/>: bytes per token in <c>rank-R.tok</c>, the shards' (<see cref="ShardFormat.Encode"/>:
    /// uint16 for GPT-2's vocabulary, half of int32's spill); 0: no token file (the caller writes the shards itself).
    /// </summary>
    public RankSpill(string dir, int rank, int permutations, int tokenWidth)
    {
        _idx = Create(IndexPath(dir, rank));
        _tokenWidth = tokenWidth;
        if (tokenWidth > 0) _tok = Create(TokenPath(dir, rank));
        if (permutations > 0) _sig = Create(SignaturePath(dir, rank));
        Permutations = permutations;
    }

    public int Permutations { get; }
    public long Count { get; private set; }

    public static string IndexPath(string dir, int rank) => Path.Combine(dir, $"rank-{rank}.idx");
    public static string TokenPath(string dir, int rank) => Path.Combine(dir, $"rank-{rank}.tok");
    public static string SignaturePath(string dir, int rank) => Path.Combine(dir, $"rank-{rank}.sig");

    static FileStream Create(string path) => new(path, FileMode.CreateNew, FileAccess.Write, FileShare.Read, 1 << 20);

    public void Append(long ordinal, int[] tokens, int chars, UInt128 key, uint[]? signature)
    {
        BinaryPrimitives.WriteInt64LittleEndian(_record, ordinal);
        BinaryPrimitives.WriteInt32LittleEndian(_record.AsSpan(8), tokens.Length);
        BinaryPrimitives.WriteInt32LittleEndian(_record.AsSpan(12), chars);
        BinaryPrimitives.WriteUInt128LittleEndian(_record.AsSpan(16), key);
        _idx.Write(_record);
        if (_tok is not null)
        {
            int bytes = tokens.Length * _tokenWidth;
            if (_encoded.Length < bytes) _encoded = new byte[Math.Max(bytes, 2 * _encoded.Length)];
            ShardFormat.Encode(tokens, _encoded.AsSpan(0, bytes), _tokenWidth);
            _tok.Write(_encoded, 0, bytes);
        }
        if (_sig is not null)
        {
            signature ??= _none ??= NoWords(Permutations);
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

/// <summary>
/// Every rank's spilled signatures, memory-mapped: by rank and row (sequential scans of a rank's own documents) or by
/// global document id (binary search on the rows' ordinals). Spans point into the maps: no copies.
/// </summary>
public sealed unsafe class SignatureStore : IDisposable
{
    readonly (MemoryMappedFile Idx, MemoryMappedViewAccessor IdxView, MemoryMappedFile Sig, MemoryMappedViewAccessor SigView, long Rows, nint IdxAt, nint SigAt)?[] _ranks;
    readonly long[] _offsets;
    readonly int _p;

    public SignatureStore(string dir, long[] rankOffsets, int permutations)
    {
        _offsets = rankOffsets;
        _p = permutations;
        _ranks = new (MemoryMappedFile, MemoryMappedViewAccessor, MemoryMappedFile, MemoryMappedViewAccessor, long, nint, nint)?[rankOffsets.Length - 1];
        for (int r = 0; r < _ranks.Length; r++)
        {
            long n = new FileInfo(RankSpill.IndexPath(dir, r)).Length / RankSpill.IndexBytes;
            if (n == 0) continue;
            var idx = MemoryMappedFile.CreateFromFile(RankSpill.IndexPath(dir, r), FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
            var sig = MemoryMappedFile.CreateFromFile(RankSpill.SignaturePath(dir, r), FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
            var iv = idx.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
            var sv = sig.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
            byte* ip = null, sp = null;
            iv.SafeMemoryMappedViewHandle.AcquirePointer(ref ip);
            sv.SafeMemoryMappedViewHandle.AcquirePointer(ref sp);
            _ranks[r] = (idx, iv, sig, sv, n, (nint)(ip + iv.PointerOffset), (nint)(sp + sv.PointerOffset));
        }
    }

    /// <summary>Documents rank <paramref name="rank"/> spilled.</summary>
    public long Rows(int rank) => _ranks[rank]?.Rows ?? 0;

    /// <summary>Global id of row <paramref name="row"/> of rank <paramref name="rank"/>.</summary>
    public long IdOf(int rank, long row) => _offsets[rank] + *(long*)((byte*)_ranks[rank]!.Value.IdxAt + row * RankSpill.IndexBytes);

    /// <summary>Signature of row <paramref name="row"/> of rank <paramref name="rank"/>.</summary>
    public ReadOnlySpan<uint> Row(int rank, long row) => new((byte*)_ranks[rank]!.Value.SigAt + row * _p * sizeof(uint), _p);

    /// <summary>Signature of document <paramref name="id"/>.</summary>
    public ReadOnlySpan<uint> Read(long id)
    {
        int r = RankOf(_offsets, id);
        long ordinal = id - _offsets[r], lo = 0, hi = Rows(r) - 1;
        while (lo <= hi)
        {
            long mid = (lo + hi) / 2, o = IdOf(r, mid) - _offsets[r];
            if (o == ordinal) return Row(r, mid);
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
        foreach (var m in _ranks)
        {
            if (m is not { } x) continue;
            x.IdxView.SafeMemoryMappedViewHandle.ReleasePointer();
            x.SigView.SafeMemoryMappedViewHandle.ReleasePointer();
            x.IdxView.Dispose(); x.Idx.Dispose(); x.SigView.Dispose(); x.Sig.Dispose();
        }
    }
}
