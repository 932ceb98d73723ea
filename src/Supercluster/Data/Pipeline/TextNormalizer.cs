using System.Globalization;
using System.IO.Hashing;
using System.Runtime.CompilerServices;
using System.Text;

namespace Supercluster.Data.Pipeline;

/// <summary>
/// The text that deduplication compares: Unicode NFKC, case-folded (invariant lower case after NFKC, plus ß → ss and
/// ς → σ, the full case folds that NFKC and lower case miss in common text), runs of white space collapsed to one
/// space, trimmed. "Hello  World" and "hello world\n" are the same document.
/// </summary>
public static class TextNormalizer
{
    public static string Normalize(string text) => Normalize(text, null);

    /// <summary>
    /// As <see cref="Normalize(string)"/>; when <paramref name="words"/> is given it receives the result's
    /// <see cref="WordSpans(string, List{ValueTuple{int, int}})"/> from the same pass (near dedup: one walk over the
    /// characters instead of two; the same spans, tested).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // on every document: no slow first tier
    public static string Normalize(string text, List<(int Start, int Length)>? words)
    {
        // ASCII is already NFKC (and the check is a vectorised scan, not a call into ICU).
        bool ascii = Ascii.IsValid(text);
        var nfkc = ascii || text.IsNormalized(NormalizationForm.FormKC) ? text : text.Normalize(NormalizationForm.FormKC);
        int most = ascii ? nfkc.Length : nfkc.Length + nfkc.AsSpan().Count('ß') + nfkc.AsSpan().Count('ẞ'); // each folds to "ss"
        var buffer = t_buffer is { } b && b.Length >= most ? b : most > MaxKeptBuffer ? new char[most] : (t_buffer = new char[Math.Max(most, 4096)]);
        words?.Clear();
        int n = 0, start = -1; // start: where the word being written began, -1 between words
        bool space = false;
        foreach (var c in nfkc)
        {
            if (char.IsWhiteSpace(c)) { space = n > 0; continue; }
            if (space)
            {
                if (start >= 0) { words!.Add((start, n - start)); start = -1; }
                buffer[n++] = ' ';
                space = false;
            }
            char lower = char.ToLowerInvariant(c);
            if (words is not null)
            {
                if (IsWordChar(lower)) { if (start < 0) start = n; }
                else if (start >= 0) { words.Add((start, n - start)); start = -1; }
            }
            // Full case folding where it differs from lower case and NFKC has not already mapped it (both at or above
            // U+00DF, so ASCII pays one compare): final sigma → σ ("ΟΔΟΣ" = "οδος"), ß/ẞ → "ss" ("STRASSE" = "straße").
            // Word characters before and after, so the word spans above hold.
            if (lower >= 'ß')
            {
                if (lower == 'ς') lower = 'σ';
                else if (lower == 'ß') { buffer[n++] = 's'; lower = 's'; }
            }
            buffer[n++] = lower;
        }
        if (start >= 0) words!.Add((start, n - start));
        return new string(buffer, 0, n);
    }

    [ThreadStatic] static char[]? t_buffer;
    const int MaxKeptBuffer = 1 << 20; // a per-thread buffer for ordinary documents, not for a rare huge one

    /// <summary>128-bit xxHash3 of the normalized text's UTF-8: the exact-duplicate key.</summary>
    public static UInt128 ExactKey(string normalized)
    {
        int most = Encoding.UTF8.GetMaxByteCount(normalized.Length);
        var bytes = most <= MaxKeptBuffer ? (t_utf8 is { } u && u.Length >= most ? u : t_utf8 = new byte[Math.Max(most, 16384)]) : new byte[most];
        return XxHash128.HashToUInt128(bytes.AsSpan(0, Encoding.UTF8.GetBytes(normalized, bytes)));
    }

    [ThreadStatic] static byte[]? t_utf8;

    /// <summary>Words of normalized text: maximal runs of letters, digits and combining marks (punctuation separates).</summary>
    public static List<string> Words(string normalized) => WordSpans(normalized).Select(w => normalized.Substring(w.Start, w.Length)).ToList();

    /// <summary>(start, length) of each word of <see cref="Words"/>, without building the strings.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static List<(int Start, int Length)> WordSpans(string normalized) => WordSpans(normalized, []);

    /// <summary>As <see cref="WordSpans(string)"/>, into <paramref name="words"/> (cleared first; reused across documents).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static List<(int Start, int Length)> WordSpans(string normalized, List<(int Start, int Length)> words)
    {
        words.Clear();
        int start = -1;
        for (int i = 0; i <= normalized.Length; i++)
        {
            bool inWord = i < normalized.Length && IsWordChar(normalized[i]);
            if (inWord && start < 0) start = i;
            else if (!inWord && start >= 0) { words.Add((start, i - start)); start = -1; }
        }
        return words;
    }

    /// <summary>Letters, digits, combining marks; astral characters (surrogate pairs: emoji, rare CJK) count as word characters.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)] // inside the per-character loops: as a call it ran at JIT tier 0 for much of a run (perf)
    static bool IsWordChar(char c) => char.IsAscii(c) ? char.IsAsciiLetterOrDigit(c) : IsNonAsciiWordChar(c); // ASCII without a Unicode category lookup

    static bool IsNonAsciiWordChar(char c) =>
        char.IsLetterOrDigit(c) || char.IsSurrogate(c) || char.GetUnicodeCategory(c) is UnicodeCategory.NonSpacingMark or UnicodeCategory.SpacingCombiningMark;
}
