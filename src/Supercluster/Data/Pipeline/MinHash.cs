using System.IO.Hashing;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Supercluster.Data.Pipeline;

/// <summary>
/// MinHash (Broder 1997) over word n-gram shingles. Each word is hashed once (64-bit xxHash3 of its UTF-16); a shingle's
/// 64-bit hash x combines its n word hashes in order and is finished by MurmurHash3's fmix64, so no shingle text is
/// built. Permutation i is the multiply-add-shift hash h_i(x) = ⌊((a_i·x + b_i) mod 2⁶⁴) / 2³²⌋ (Dietzfelbinger 1996;
/// a_i odd, (a_i, b_i) from SplitMix64(seed)), a 32-bit value; the signature is each permutation's minimum over the
/// shingles. The share of equal positions in two signatures estimates the Jaccard similarity of their shingle sets
/// (standard error √(J(1−J)/P)). A document shorter than n words is one shingle.
/// Per permutation the shingle hashes run through SIMD lanes (<see cref="Vector{T}"/>: one code path for AVX2 and
/// AVX-512) with the same values as the scalar formula (tested).
/// </summary>
public sealed class MinHash
{
    const ulong CombineMultiplier = 0x9E3779B97F4A7C15UL; // odd: each combining step is a bijection
    readonly ulong[] _a, _b;

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
            _a[i] = SplitMix(ref s) | 1;
            _b[i] = SplitMix(ref s);
        }
    }

    [ThreadStatic] static ulong[]? t_words, t_shingles;

    public int Permutations { get; }
    public int Ngram { get; }

    /// <summary>Signature of a word sequence, or null when it has no words.</summary>
    public uint[]? Signature(IReadOnlyList<string> words) => Signature(words, vector: true);

    /// <summary><paramref name="vector"/> false: the scalar formula only (the reference for the SIMD path).</summary>
    public uint[]? Signature(IReadOnlyList<string> words, bool vector)
    {
        var hashes = new ulong[words.Count];
        for (int i = 0; i < hashes.Length; i++) hashes[i] = WordHash(words[i]);
        return FromWordHashes(hashes, vector);
    }

    /// <summary>Signature of the words of <paramref name="text"/> at <paramref name="words"/> (no word strings needed).</summary>
    public uint[]? Signature(string text, ReadOnlySpan<(int Start, int Length)> words)
    {
        if (words.Length == 0) return null;
        var hashes = Buffer(ref t_words, words.Length);
        for (int i = 0; i < words.Length; i++) hashes[i] = WordHash(text.AsSpan(words[i].Start, words[i].Length));
        return FromWordHashes(hashes.AsSpan(0, words.Length), vector: true);
    }

    static ulong WordHash(ReadOnlySpan<char> word) => XxHash3.HashToUInt64(MemoryMarshal.AsBytes(word));

    static ulong[] Buffer(ref ulong[]? cached, int length) =>
        cached is { } b && b.Length >= length ? b : cached = new ulong[Math.Max(length, 1024)];

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    uint[]? FromWordHashes(ReadOnlySpan<ulong> words, bool vector)
    {
        if (words.Length == 0) return null;
        int count = Math.Max(1, words.Length - Ngram + 1);
        var shingles = Buffer(ref t_shingles, count);
        for (int s = 0; s < count; s++)
        {
            ulong h = 0;
            for (int w = s; w < Math.Min(words.Length, s + Ngram); w++) h = (h ^ words[w]) * CombineMultiplier;
            shingles[s] = Fmix64(h);
        }
        var xs = shingles.AsSpan(0, count);
        var sig = new uint[Permutations];
        for (int i = 0; i < sig.Length; i++) sig[i] = vector ? MinVector(xs, _a[i], _b[i]) : MinScalar(xs, _a[i], _b[i]);
        return sig;
    }

    /// <summary>min over x of h(x) = ((a·x + b) mod 2⁶⁴) >> 32: the scalar formula.</summary>
    static uint MinScalar(ReadOnlySpan<ulong> xs, ulong a, ulong b)
    {
        ulong min = ulong.MaxValue;
        foreach (var x in xs) min = Math.Min(min, unchecked(a * x + b) >> 32);
        return (uint)min;
    }

    /// <summary>As <see cref="MinScalar"/>, <see cref="Vector{T}.Count"/> shingles at a time.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static uint MinVector(ReadOnlySpan<ulong> xs, ulong a, ulong b)
    {
        int n = Vector<ulong>.Count, s = 0;
        ulong min = ulong.MaxValue;
        if (Vector.IsHardwareAccelerated && xs.Length >= n)
        {
            var av = new Vector<ulong>(a);
            var bv = new Vector<ulong>(b);
            var m = new Vector<ulong>(ulong.MaxValue);
            for (; s + n <= xs.Length; s += n) m = Vector.Min(m, (new Vector<ulong>(xs[s..]) * av + bv) >>> 32);
            for (int k = 0; k < n; k++) min = Math.Min(min, m[k]);
        }
        for (; s < xs.Length; s++) min = Math.Min(min, unchecked(a * xs[s] + b) >> 32);
        return (uint)min;
    }

    /// <summary>Share of equal positions: the MinHash estimate of Jaccard similarity.</summary>
    public static double Similarity(ReadOnlySpan<uint> a, ReadOnlySpan<uint> b)
    {
        int same = 0;
        for (int i = 0; i < a.Length; i++) if (a[i] == b[i]) same++;
        return (double)same / a.Length;
    }

    /// <summary>MurmurHash3's 64-bit finaliser: every input bit affects every output bit.</summary>
    static ulong Fmix64(ulong k)
    {
        k ^= k >> 33;
        k *= 0xFF51AFD7ED558CCDUL;
        k ^= k >> 33;
        k *= 0xC4CEB9FE1A85EC53UL;
        return k ^ (k >> 33);
    }

    static ulong SplitMix(ref ulong s)
    {
        ulong z = unchecked(s += 0x9E3779B97F4A7C15UL);
        z = unchecked((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL);
        z = unchecked((z ^ (z >> 27)) * 0x94D049BB133111EBUL);
        return z ^ (z >> 31);
    }
}
