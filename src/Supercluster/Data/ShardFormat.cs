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

    /// <summary>Bytes per token for a version.</summary>
    public static int TokenWidth(int version) => version switch
    {
        VersionUInt16 => 2,
        VersionUInt32 => 4,
        _ => throw new ArgumentOutOfRangeException(nameof(version), version, "shard versions are 1 (uint16) and 2 (uint32)"),
    };
}
