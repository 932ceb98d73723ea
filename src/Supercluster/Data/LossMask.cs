using System.Buffers.Binary;
using System.IO.MemoryMappedFiles;

namespace Supercluster.Data;

/// <summary>
/// The loss-mask stream beside a token shard (<c>SPLIT_NNNNNN.mask</c> next to <c>SPLIT_NNNNNN.bin</c>): a 1024-byte
/// header of 256 little-endian int32 (magic <see cref="Magic"/>, version <see cref="Version"/>, token count), then one
/// byte per token of the shard: 1 where that token is a training target (an assistant's reply), 0 where it is not.
/// docs/data.md documents the layout.
/// </summary>
public static class LossMask
{
    public const int Magic = 20261202;
    public const int Version = 1;
    public const string Extension = ".mask";

    /// <summary>The mask file of a shard file name: train_000000.bin → train_000000.mask.</summary>
    public static string FileFor(string shardFile) => Path.ChangeExtension(shardFile, Extension);

    /// <summary>Writes a whole mask to <paramref name="path"/> through a temporary name, fsynced, then renamed.</summary>
    public static void Write(string path, ReadOnlySpan<byte> mask)
    {
        var header = new byte[ShardFormat.HeaderBytes];
        BinaryPrimitives.WriteInt32LittleEndian(header, Magic);
        BinaryPrimitives.WriteInt32LittleEndian(header.AsSpan(4), Version);
        BinaryPrimitives.WriteInt32LittleEndian(header.AsSpan(8), mask.Length);
        string temp = path + ".tmp";
        using (var f = new FileStream(temp, FileMode.Create, FileAccess.Write))
        {
            f.Write(header);
            f.Write(mask);
            f.Flush(flushToDisk: true);
        }
        File.Move(temp, path, overwrite: true);
    }

    /// <summary>A memory-mapped mask, checked against its shard's token count.</summary>
    public sealed class Reader : IDisposable
    {
        readonly MemoryMappedFile _map;
        readonly MemoryMappedViewAccessor _view;

        Reader(MemoryMappedFile map, MemoryMappedViewAccessor view, long count) { _map = map; _view = view; Count = count; }

        public long Count { get; }

        public static Reader Open(string path, long shardTokens)
        {
            var info = new FileInfo(path);
            if (!info.Exists) throw new BadInputException($"loss mask {path} does not exist (the data folder says it has loss masks; re-run prepare --format chat)");
            if (info.Length < ShardFormat.HeaderBytes) throw new BadInputException($"loss mask {path} is truncated: {info.Length} bytes");
            var map = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
            var view = map.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
            int magic = view.ReadInt32(0), version = view.ReadInt32(4), count = view.ReadInt32(8);
            string? error = magic != Magic ? $"has magic {magic}, expected {Magic} (not a loss mask)"
                : version != Version ? $"has version {version}, expected {Version}"
                : count != shardTokens ? $"counts {count} tokens, its shard has {shardTokens}"
                : info.Length != ShardFormat.HeaderBytes + (long)count ? $"has {info.Length} bytes, expected {ShardFormat.HeaderBytes + (long)count}"
                : null;
            if (error is not null)
            {
                view.Dispose(); map.Dispose();
                throw new BadInputException($"loss mask {path} {error}");
            }
            return new Reader(map, view, count);
        }

        /// <summary>Mask bytes [start, start + dest.Length).</summary>
        public void Read(long start, byte[] dest, int offset, int count) => _view.ReadArray(ShardFormat.HeaderBytes + start, dest, offset, count);

        public void Dispose() { _view.Dispose(); _map.Dispose(); }
    }
}
