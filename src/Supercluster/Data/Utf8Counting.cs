using System.Text;

namespace Supercluster.Data;

/// <summary>
/// A UTF-8 decoding that replaces each invalid byte sequence with U+FFFD, as the default does, and counts them, so
/// input that is not valid UTF-8 can be reported (one warning per file with the count) instead of passing silently.
/// </summary>
public sealed class Utf8Counting : DecoderFallback
{
    long _count;

    public Utf8Counting() => Encoding = (Encoding)Encoding.GetEncoding("utf-8", EncoderFallback.ReplacementFallback, this);

    /// <summary>UTF-8 without BOM emission, decoding with this counter.</summary>
    public Encoding Encoding { get; }

    char[] _chars = new char[256];

    /// <summary>
    /// Decodes in one pass (GetString would count every invalid sequence twice: once sizing, once decoding).
    /// Not thread-safe: one instance per reader.
    /// </summary>
    public string Decode(ReadOnlySpan<byte> bytes)
    {
        int max = Encoding.GetMaxCharCount(bytes.Length);
        if (_chars.Length < max) _chars = new char[Math.Max(max, _chars.Length * 2)];
        int n = Encoding.GetChars(bytes, _chars);
        return new string(_chars, 0, n);
    }

    /// <summary>Replacement characters produced so far.</summary>
    public long Count => Interlocked.Read(ref _count);

    public override int MaxCharCount => 1;
    public override DecoderFallbackBuffer CreateFallbackBuffer() => new Buffer(this);

    sealed class Buffer(Utf8Counting owner) : DecoderFallbackBuffer
    {
        int _left;
        public override bool Fallback(byte[] bytesUnknown, int index)
        {
            Interlocked.Increment(ref owner._count);
            _left = 1;
            return true;
        }
        public override char GetNextChar()
        {
            if (_left == 0) return '\0';
            _left--;
            return '\uFFFD';
        }
        public override bool MovePrevious()
        {
            if (_left != 0) return false;
            _left = 1;
            return true;
        }
        public override int Remaining => _left;
        public override void Reset() => _left = 0;
    }

    /// <summary>The warning line for a file with <paramref name="count"/> replacements.</summary>
    public static string Warning(string path, long count) =>
        $"warning: {path} is not valid UTF-8: {count:N0} invalid byte sequence(s) replaced with U+FFFD";
}
