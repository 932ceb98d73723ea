using System.IO.Hashing;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Supercluster.Data.Pipeline;

/// <summary>
/// MinHash (Broder 1997) over word n-gram shingles. Each shingle is hashed once with 64-bit xxHash3; permutation i is
/// the universal hash h_i(x) = (a_i·x + b_i) mod (2⁶¹−1) with (a_i, b_i) drawn from SplitMix64(seed), as datasketch does.
/// The share of equal positions in two signatures estimates the Jaccard similarity of their shingle sets
/// (standard error √(J(1−J)/P)). A document shorter than n words is one shingle.
/// The permutations run four lanes at a time (AVX2: 64-bit products from 32-bit halves, reduced mod 2⁶¹−1), with the
/// same values as the scalar formula (tested); shingles are hashed from one reused buffer.
/// </summary>
public sealed class MinHash
{
    const ulong Prime = (1UL << 61) - 1;
    readonly ulong[] _a, _b, _aLow, _aHigh;

    public MinHash(int permutations = 128, int ngram = 5, ulong seed = 1)
    {
        if (permutations < 1) throw new BadInputException($"--near-perms {permutations}: expected at least 1");
        if (ngram < 1) throw new BadInputException($"--near-ngram {ngram}: expected at least 1");
        Permutations = permutations;
        Ngram = ngram;
        _a = new ulong[permutations];
        _b = new ulong[permutations];
        ulong s = seed;
        for (int i = 0; i < permutations; i++)
        {
            _a[i] = SplitMix(ref s) % (Prime - 1) + 1;
            _b[i] = SplitMix(ref s) % Prime;
        }
        _aLow = _a.Select(a => a & 0xFFFF_FFFFUL).ToArray();
        _aHigh = _a.Select(a => a >> 32).ToArray();
    }

    [ThreadStatic] static char[]? t_shingle;

    public int Permutations { get; }
    public int Ngram { get; }

    /// <summary>Permutations computed at once: 8 with AVX-512, 4 with AVX2, else 1 (the scalar formula).</summary>
    public static int BestLanes { get; } = Avx512F.IsSupported ? 8 : Avx2.IsSupported ? 4 : 1;

    /// <summary>Signature of a word sequence, or null when it has no words.</summary>
    public ulong[]? Signature(IReadOnlyList<string> words) => Signature(words, BestLanes);

    /// <summary><paramref name="lanes"/> 1: the scalar formula only (the reference for the vector paths).</summary>
    public ulong[]? Signature(IReadOnlyList<string> words, int lanes)
    {
        var spans = new (int Start, int Length)[words.Count];
        int at = 0;
        for (int i = 0; i < words.Count; i++) { spans[i] = (at, words[i].Length); at += words[i].Length; }
        return Signature(string.Concat(words), spans, lanes);
    }

    /// <summary>Signature of the words of <paramref name="text"/> at <paramref name="words"/> (no word strings needed).</summary>
    public ulong[]? Signature(string text, ReadOnlySpan<(int Start, int Length)> words) => Signature(text, words, BestLanes);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    ulong[]? Signature(string text, ReadOnlySpan<(int Start, int Length)> words, int lanes)
    {
        if (words.Length == 0) return null;
        var sig = new ulong[Permutations];
        Array.Fill(sig, ulong.MaxValue);
        int shingles = Math.Max(1, words.Length - Ngram + 1);
        var buffer = t_shingle ??= new char[256];
        for (int s = 0; s < shingles; s++)
        {
            int length = 0;
            for (int w = s; w < Math.Min(words.Length, s + Ngram); w++)
            {
                var word = text.AsSpan(words[w].Start, words[w].Length);
                if (length + word.Length + 1 > buffer.Length) Array.Resize(ref buffer, 2 * (length + word.Length + 1));
                word.CopyTo(buffer.AsSpan(length));
                length += word.Length;
                buffer[length++] = '\u001f'; // shingle = each word followed by a unit separator
            }
            t_shingle = buffer;
            ulong x = XxHash3.HashToUInt64(MemoryMarshal.AsBytes(buffer.AsSpan(0, length))) % Prime;
            int i = lanes switch { 8 => Min8(sig, x), 4 => Min4(sig, x), _ => 0 };
            for (; i < sig.Length; i++)
            {
                ulong h = MulAddMod(_a[i], x, _b[i]);
                if (h < sig[i]) sig[i] = h;
            }
        }
        return sig;
    }

    /// <summary>
    /// sig[i] = min(sig[i], (a_i·x + b_i) mod p) four lanes at a time (AVX2); returns the first index not done. With a = a₁·2³² + a₀, x = x₁·2³² + x₀ (a₁, x₁ &lt; 2²⁹):
    /// a·x = a₁x₁·2⁶⁴ + (a₁x₀ + a₀x₁)·2³² + a₀x₀, and 2⁶¹ ≡ 1, so 2⁶⁴ ≡ 8 and m·2³² ≡ ⌊m/2²⁹⌋ + (m mod 2²⁹)·2³².
    /// The terms sum to less than 2⁶³; one fold and one subtraction give the residue in [0, p), as the scalar path.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    int Min4(ulong[] sig, ulong x)
    {
        var p = Vector256.Create(Prime);
        var x0 = Vector256.Create(x & 0xFFFF_FFFFUL).AsUInt32();
        var x1 = Vector256.Create(x >> 32).AsUInt32();
        var low29 = Vector256.Create((1UL << 29) - 1);
        int i = 0;
        for (; i + 4 <= sig.Length; i += 4)
        {
            var a0 = Vector256.Create<ulong>(_aLow.AsSpan(i, 4)).AsUInt32();
            var a1 = Vector256.Create<ulong>(_aHigh.AsSpan(i, 4)).AsUInt32();
            var lo = Avx2.Multiply(a0, x0);                                   // < 2⁶⁴
            var mid = Avx2.Multiply(a1, x0) + Avx2.Multiply(a0, x1);          // < 2⁶²
            var high = Avx2.Multiply(a1, x1);                                 // < 2⁵⁸
            var r = (lo & p) + (lo >>> 61) + (mid >>> 29) + ((mid & low29) << 32) + (high << 3) + Vector256.Create<ulong>(_b.AsSpan(i, 4));
            r = (r & p) + (r >>> 61);
            r -= Vector256.GreaterThanOrEqual(r, p) & p;
            var current = Vector256.Create<ulong>(sig.AsSpan(i, 4));
            Vector256.Min(current, r).CopyTo(sig.AsSpan(i, 4));
        }
        return i; // the caller finishes the lanes left over
    }

    /// <summary>As <see cref="Min4"/>, eight lanes (AVX-512).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    int Min8(ulong[] sig, ulong x)
    {
        var p = Vector512.Create(Prime);
        var x0 = Vector512.Create(x & 0xFFFF_FFFFUL).AsUInt32();
        var x1 = Vector512.Create(x >> 32).AsUInt32();
        var low29 = Vector512.Create((1UL << 29) - 1);
        int i = 0;
        for (; i + 8 <= sig.Length; i += 8)
        {
            var a0 = Vector512.Create<ulong>(_aLow.AsSpan(i, 8)).AsUInt32();
            var a1 = Vector512.Create<ulong>(_aHigh.AsSpan(i, 8)).AsUInt32();
            var lo = Avx512F.Multiply(a0, x0);                                   // < 2⁶⁴
            var mid = Avx512F.Multiply(a1, x0) + Avx512F.Multiply(a0, x1);          // < 2⁶²
            var high = Avx512F.Multiply(a1, x1);                                 // < 2⁵⁸
            var r = (lo & p) + (lo >>> 61) + (mid >>> 29) + ((mid & low29) << 32) + (high << 3) + Vector512.Create<ulong>(_b.AsSpan(i, 8));
            r = (r & p) + (r >>> 61);
            r -= Vector512.GreaterThanOrEqual(r, p) & p;
            var current = Vector512.Create<ulong>(sig.AsSpan(i, 8));
            Vector512.Min(current, r).CopyTo(sig.AsSpan(i, 8));
        }
        return i; // the caller finishes the lanes left over
    }

    /// <summary>Share of equal positions: the MinHash estimate of Jaccard similarity.</summary>
    public static double Similarity(ReadOnlySpan<ulong> a, ReadOnlySpan<ulong> b)
    {
        int same = 0;
        for (int i = 0; i < a.Length; i++) if (a[i] == b[i]) same++;
        return (double)same / a.Length;
    }

    /// <summary>(a·x + b) mod 2⁶¹−1 with a, x, b &lt; 2⁶¹−1, by the Mersenne reduction.</summary>
    static ulong MulAddMod(ulong a, ulong x, ulong b)
    {
        ulong hi = Math.BigMul(a, x, out ulong lo);
        ulong r = (lo & Prime) + ((lo >> 61) | (hi << 3)) + b; // < 3·2⁶¹, fits
        r = (r & Prime) + (r >> 61);
        return r >= Prime ? r - Prime : r;
    }

    static ulong SplitMix(ref ulong s)
    {
        ulong z = unchecked(s += 0x9E3779B97F4A7C15UL);
        z = unchecked((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL);
        z = unchecked((z ^ (z >> 27)) * 0x94D049BB133111EBUL);
        return z ^ (z >> 31);
    }
}
