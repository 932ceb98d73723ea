using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Supercluster.Data;

/// <summary>
/// Token shard layout, compatible with llm.c's <c>.bin</c> files so data can move between the two:
/// a header of 256 little-endian int32 (<c>[0]</c> = magic 20240520, <c>[1]</c> = version, <c>[2]</c> = token count,
/// the rest 0), then the tokens. Version 1 stores uint16 tokens (llm.c's only format; vocab ≤ 65536).
/// Version 2 is our extension for vocab &gt; 65536 (cl100k, o200k): identical header, uint32 tokens.
/// </summary>
public static class ShardFormat
{
    public const int Magic = 20240520;
    public const int HeaderInts = 256;
    public const int HeaderBytes = HeaderInts * sizeof(int);
    public const int VersionUInt16 = 1;
    public const int VersionUInt32 = 2;

    /// <summary>The narrowest version that holds every id of a vocabulary of this size.</summary>
    public static int VersionFor(int vocabSize) => vocabSize > 65536 ? VersionUInt32 : VersionUInt16;

    /// <summary>The header of a shard of <paramref name="tokens"/> tokens (the one place that writes it).</summary>
    public static byte[] Header(int version, long tokens)
    {
        if (tokens > int.MaxValue) throw new InvalidOperationException("llm.c headers hold an int32 token count; use smaller shards");
        var header = new byte[HeaderBytes];
        System.Buffers.Binary.BinaryPrimitives.WriteInt32LittleEndian(header, Magic);
        System.Buffers.Binary.BinaryPrimitives.WriteInt32LittleEndian(header.AsSpan(4), version);
        System.Buffers.Binary.BinaryPrimitives.WriteInt32LittleEndian(header.AsSpan(8), (int)tokens);
        return header;
    }

    /// <summary>Bytes per token for a version.</summary>
    public static int TokenWidth(int version) => version switch
    {
        VersionUInt16 => 2,
        VersionUInt32 => 4,
        _ => throw new ArgumentOutOfRangeException(nameof(version), version, "shard versions are 1 (uint16) and 2 (uint32)"),
    };

    /// <summary>
    /// <paramref name="tokens"/> as a shard stores them: <paramref name="width"/> bytes each, little-endian, into
    /// <paramref name="bytes"/> (tokens × width long). A token the width cannot hold throws. The one encoder for the shards
    /// and for prepare's spill, which keeps tokens in this form so that its pass 2 copies bytes.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // prepare calls it once per document: no slow first tier
    public static void Encode(ReadOnlySpan<int> tokens, Span<byte> bytes, int width)
    {
        if (bytes.Length != tokens.Length * width) throw new ArgumentException($"{tokens.Length} tokens of {width} bytes need {tokens.Length * width} bytes, got {bytes.Length}");
        if (width == 2)
        {
            if (tokens.ContainsAnyExceptInRange(0, ushort.MaxValue))
                throw new ArgumentOutOfRangeException(nameof(tokens), tokens[tokens.IndexOfAnyExceptInRange(0, ushort.MaxValue)], "token does not fit a version-1 (uint16) shard");
            // A plain loop, not TensorPrimitives.ConvertTruncating: that package has no precompiled code, so each
            // `prepare` ran it at JIT tier 0 for its first ~10⁴ documents (0.1 s of the serial assemble at 20 MB).
            var narrow = MemoryMarshal.Cast<byte, ushort>(bytes); // little-endian, as the format
            for (int i = 0; i < tokens.Length; i++) narrow[i] = (ushort)tokens[i];
        }
        else
        {
            if (tokens.ContainsAnyExceptInRange(0, int.MaxValue))
                throw new ArgumentOutOfRangeException(nameof(tokens), tokens[tokens.IndexOfAnyExceptInRange(0, int.MaxValue)], "negative token");
            MemoryMarshal.AsBytes(tokens).CopyTo(bytes);
        }
    }
}
