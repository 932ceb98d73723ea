using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Supercluster.Data;

/// <summary>
/// Writes one shard to <c>path.tmp</c>; <see cref="Commit"/> fills in the header, fsyncs and renames it to its final name,
/// so readers never see a half-written shard. Disposing without committing deletes the temp file.
/// </summary>
public sealed class ShardWriter : IDisposable
{
    readonly FileStream _file;
    readonly string _temp;
    readonly int _width;
    readonly byte[] _buffer = new byte[1 << 16];
    bool _done;

    public ShardWriter(string path, int version)
    {
        Path_ = path;
        Version = version;
        _width = ShardFormat.TokenWidth(version);
        _temp = path + ".tmp";
        _file = new FileStream(_temp, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20);
        _file.Write(new byte[ShardFormat.HeaderBytes]); // placeholder until the count is known
    }

    string Path_ { get; }
    public int Version { get; }

    /// <summary>Tokens written so far.</summary>
    public long TokenCount { get; private set; }

    /// <summary>Appends tokens; each must fit the version's width.</summary>
    public void Write(ReadOnlySpan<int> tokens)
    {
        int per = _buffer.Length / _width;
        for (int start = 0; start < tokens.Length; start += per)
        {
            var part = tokens.Slice(start, Math.Min(per, tokens.Length - start));
            var bytes = _buffer.AsSpan(0, part.Length * _width);
            ShardFormat.Encode(part, bytes, _width);
            _file.Write(bytes);
        }
        TokenCount += tokens.Length;
    }

    /// <summary>Appends tokens already in the shard's form (<see cref="ShardFormat.Encode"/>): a whole number of tokens.</summary>
    public void WriteEncoded(ReadOnlySpan<byte> bytes)
    {
        if (bytes.Length % _width != 0) throw new ArgumentException($"{bytes.Length} bytes are not whole {_width}-byte tokens");
        _file.Write(bytes);
        TokenCount += bytes.Length / _width;
    }

    /// <summary>Writes the header, flushes to disk and atomically renames the shard into place.</summary>
    public void Commit()
    {
        if (_done) throw new InvalidOperationException("shard already committed");
        var header = ShardFormat.Header(Version, TokenCount);
        _file.Position = 0;
        _file.Write(header);
        _file.Flush(flushToDisk: true);
        _file.Dispose();
        File.Move(_temp, Path_, overwrite: true);
        _done = true;
    }

    public void Dispose()
    {
        _file.Dispose();
        if (!_done && File.Exists(_temp)) File.Delete(_temp);
        _done = true;
    }
}
