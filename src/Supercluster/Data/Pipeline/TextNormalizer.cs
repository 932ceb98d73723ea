using System.Globalization;
using System.IO.Hashing;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
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
    /// <see cref="WordSpans(string, List{ValueTuple{int, int}})"/> (near dedup), found from 32-character block masks
    /// (the same spans, tested).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // on every document: no slow first tier
    public static string Normalize(string text, List<(int Start, int Length)>? words)
    {
        // ASCII is already NFKC (and the check is a vectorised scan, not a call into ICU).
        bool ascii = Ascii.IsValid(text);
        var nfkc = ascii || text.IsNormalized(NormalizationForm.FormKC) ? text : text.Normalize(NormalizationForm.FormKC);
        int most = ascii ? nfkc.Length : nfkc.Length + nfkc.AsSpan().Count('ß') + nfkc.AsSpan().Count('ẞ'); // each folds to "ss"
        var buffer = t_buffer is { } b && b.Length >= most ? b : most > MaxKeptBuffer ? new char[most] : (t_buffer = new char[Math.Max(most, 4096)]);
        int n = 0;
        bool space = false;
        foreach (var c in nfkc)
        {
            if (char.IsWhiteSpace(c)) { space = n > 0; continue; }
            if (space)
            {
                buffer[n++] = ' ';
                space = false;
            }
            char lower = char.ToLowerInvariant(c);
            // Full case folding where it differs from lower case and NFKC has not already mapped it (both at or above
            // U+00DF, so ASCII pays one compare): final sigma → σ ("ΟΔΟΣ" = "οδος"), ß/ẞ → "ss" ("STRASSE" = "straße").
            if (lower >= 'ß')
            {
                if (lower == 'ς') lower = 'σ';
                else if (lower == 'ß') { buffer[n++] = 's'; lower = 's'; }
            }
            buffer[n++] = lower;
        }
        var result = new string(buffer, 0, n);
        if (words is not null) WordSpansByBlocks(result, words);
        return result;
    }

    /// <summary>
    /// <see cref="WordSpans(string, List{ValueTuple{int, int}})"/> from 32-character blocks: a bit mask of word characters
    /// per block (vector compares when the block is ASCII, <see cref="IsWordChar"/> otherwise), words from its edges.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void WordSpansByBlocks(string s, List<(int Start, int Length)> words)
    {
        words.Clear();
        ref ushort chars = ref Unsafe.As<char, ushort>(ref MemoryMarshal.GetReference(s.AsSpan()));
        int start = -1;
        for (int p = 0; p < s.Length; p += 32)
        {
            uint w = p + 32 <= s.Length && AsciiWordMask(ref Unsafe.Add(ref chars, p), out uint m) ? m : ScalarWordMask(s, p);
            uint carry = start >= 0 ? 1u : 0u;
            uint edges = w ^ (w << 1 | carry); // a start (word bit set) or an end (word bit clear) at each changed position
            while (edges != 0)
            {
                int b = BitOperations.TrailingZeroCount(edges);
                edges &= edges - 1;
                if (start < 0) start = p + b;
                else { words.Add((start, p + b - start)); start = -1; }
            }
        }
        if (start >= 0) words.Add((start, s.Length - start));
    }

    /// <summary>Word characters of 32 ASCII characters (letters and digits); false when one is not ASCII.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static bool AsciiWordMask(ref ushort at, out uint mask)
    {
        if (Vector512.IsHardwareAccelerated)
        {
            var v = Vector512.LoadUnsafe(ref at);
            mask = 0;
            if ((v & Vector512.Create((ushort)0xFF80)) != Vector512<ushort>.Zero) return false;
            var letter = Vector512.LessThanOrEqual((v | Vector512.Create((ushort)0x20)) - Vector512.Create((ushort)'a'), Vector512.Create((ushort)25));
            var digit = Vector512.LessThanOrEqual(v - Vector512.Create((ushort)'0'), Vector512.Create((ushort)9));
            mask = (uint)(letter | digit).ExtractMostSignificantBits();
            return true;
        }
        var lo = Vector256.LoadUnsafe(ref at);
        var hi = Vector256.LoadUnsafe(ref Unsafe.Add(ref at, 16));
        mask = 0;
        if (((lo | hi) & Vector256.Create((ushort)0xFF80)) != Vector256<ushort>.Zero) return false;
        mask = Word256(lo) | Word256(hi) << 16;
        return true;

        static uint Word256(Vector256<ushort> v) =>
            (Vector256.LessThanOrEqual((v | Vector256.Create((ushort)0x20)) - Vector256.Create((ushort)'a'), Vector256.Create((ushort)25))
            | Vector256.LessThanOrEqual(v - Vector256.Create((ushort)'0'), Vector256.Create((ushort)9))).ExtractMostSignificantBits();
    }

    static uint ScalarWordMask(string s, int p)
    {
        uint mask = 0;
        int n = Math.Min(32, s.Length - p);
        for (int j = 0; j < n; j++) if (IsWordChar(s[p + j])) mask |= 1u << j;
        return mask;
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
