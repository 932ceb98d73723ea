using System.Text;
using Supercluster.Tokenization;

namespace Supercluster.Search;

/// <summary>One passage of a document: its tokens and where its text lies in the document (UTF-16 char offsets).</summary>
public sealed record PassageSpan(int Start, int End, int[] Tokens);

/// <summary>
/// Splits a document into consecutive, non-overlapping passages of at most <c>size</c> tokens. Offsets come from the
/// tokens' bytes (byte-level tokenizers decode to exactly the input), so a passage's text is the document's
/// substring [Start, End); a cut inside a multi-byte character moves to the character's start.
/// </summary>
public static class PassageSplitter
{
    public static IEnumerable<PassageSpan> Split(string text, TextTokenizer tok, int size)
    {
        if (size < 1) throw new ArgumentOutOfRangeException(nameof(size));
        var ids = tok.Encode(text);
        if (ids.Length == 0) yield break;
        // charAt[b] = index of the character that starts at or contains UTF-8 byte b.
        int totalBytes = Encoding.UTF8.GetByteCount(text);
        var charAt = new int[totalBytes + 1];
        for (int c = 0, b = 0; c < text.Length;)
        {
            int width = char.IsSurrogatePair(text, c) ? 2 : 1;
            int n = Encoding.UTF8.GetByteCount(text.AsSpan(c, width));
            for (int i = 0; i < n; i++) charAt[b + i] = c;
            b += n; c += width;
        }
        charAt[totalBytes] = text.Length;
        long bytes = 0;
        bool faithful = true;
        var boundaries = new List<int> { 0 };
        for (int start = 0; start < ids.Length; start += size)
        {
            int end = Math.Min(ids.Length, start + size);
            for (int i = start; i < end; i++) bytes += tok.TokenBytes(ids[i]).Length;
            if (bytes > totalBytes) { faithful = false; break; }
            boundaries.Add(charAt[bytes]);
        }
        faithful &= bytes == totalBytes;
        for (int p = 0, start = 0; start < ids.Length; p++, start += size)
        {
            var chunk = ids[start..Math.Min(ids.Length, start + size)];
            // A tokenizer whose tokens do not spell the input (normalising ones) gets no offsets: -1.
            yield return faithful ? new PassageSpan(boundaries[p], boundaries[p + 1], chunk) : new PassageSpan(-1, -1, chunk);
        }
    }
}
