using System.IO.Hashing;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Supercluster.Data.Pipeline;

/// <summary>
/// MinHash (Broder 1997) over word n-gram shingles. Each word is hashed once (64-bit xxHash3 of its UTF-16); a shingle's
/// 64-bit hash x combines its n word hashes in order and is finished by MurmurHash3's fmix64, so no shingle text is
/// built. Permutation i is h_i(x) = (lo(x) + c_i·hi(x)) mod 2³², lo and hi the two 32-bit halves of x and c_i a
/// random 32-bit multiplier (SplitMix64(seed)): for each i a uniform 32-bit function of the shingle (lo is uniform and
/// independent of hi), and for i ≠ j the difference h_j − h_i = (c_j − c_i)·hi is independent of h_i, so the
/// permutations are pairwise independent up to their lowest bits, which a minimum hardly sees (double hashing in the
/// style of Kirsch and Mitzenmacher, with random multipliers). The signature is each permutation's minimum over the
/// shingles. The share of equal positions in two signatures estimates the Jaccard similarity of their shingle sets
/// (standard error √(J(1−J)/P); the spread and the LSH candidate rate match independent permutations, tested).
/// A document shorter than n words is one shingle.
/// Cost: one 32-bit multiply, add and min per shingle and permutation, lanes of permutations at a time: with AVX-512,
/// eight 16-lane vectors (128 permutations) per pass over the shingles; else four <see cref="Vector{T}"/> vectors.
/// Same values as the scalar formula (tested).
/// </summary>
public sealed class MinHash
{
    const ulong CombineMultiplier = 0x9E3779B97F4A7C15UL; // odd: each combining step is a bijection
    /// <summary>Permutations computed per pass over the shingles: the vectors of multipliers and minima held in registers.</summary>
    static int Block => Vector512.IsHardwareAccelerated ? 8 * Vector512<uint>.Count : 4 * Vector<uint>.Count;
    readonly uint[] _c; // padded to a whole number of blocks; the extra permutations are computed and dropped

    public MinHash(int permutations = 128, int ngram = 5, ulong seed = 1)
    {
        if (permutations < 1) throw new BadInputException($"--near-perms {permutations}: expected at least 1");
        if (ngram < 1) throw new BadInputException($"--near-ngram {ngram}: expected at least 1");
        Permutations = permutations;
        Ngram = ngram;
        _c = new uint[(permutations + Block - 1) / Block * Block];
        ulong s = seed;
        for (int i = 0; i < _c.Length; i++) _c[i] = (uint)(SplitMix(ref s) >> 32);
    }

    [ThreadStatic] static ulong[]? t_words, t_shingles;
    [ThreadStatic] static uint[]? t_mins;

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
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // once per document: no slow first tier in a seconds-long prepare
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
        var xs = Buffer(ref t_shingles, count).AsSpan(0, count);
        int n = Math.Min(Ngram, words.Length); // shorter than n words: one shingle of them all
        for (int s = 0; s < xs.Length; s++)
        {
            ulong h = 0;
            foreach (var w in words.Slice(s, n)) h = (h ^ w) * CombineMultiplier;
            xs[s] = Fmix64(h);
        }
        var sig = new uint[Permutations];
        if (vector && Vector.IsHardwareAccelerated)
        {
            var mins = t_mins is { } m && m.Length >= _c.Length ? m : t_mins = new uint[_c.Length];
            if (Vector512.IsHardwareAccelerated) MinVector512(xs, _c, mins);
            else MinVector(xs, _c, mins);
            mins.AsSpan(0, sig.Length).CopyTo(sig);
        }
        else
            for (int i = 0; i < sig.Length; i++) sig[i] = MinScalar(xs, _c[i]);
        return sig;
    }

    /// <summary>min over x of h(x) = (lo(x) + c·hi(x)) mod 2³²: the scalar formula.</summary>
    static uint MinScalar(ReadOnlySpan<ulong> xs, uint c)
    {
        uint min = uint.MaxValue;
        foreach (var x in xs) min = Math.Min(min, unchecked((uint)x + c * (uint)(x >> 32)));
        return min;
    }

    /// <summary>As <see cref="MinScalar"/> for every multiplier in <paramref name="c"/> (a whole number of blocks) into <paramref name="mins"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void MinVector(ReadOnlySpan<ulong> xs, ReadOnlySpan<uint> c, Span<uint> mins)
    {
        int n = Vector<uint>.Count;
        for (int p = 0; p < c.Length; p += 4 * n)
        {
            var c0 = new Vector<uint>(c[p..]);
            var c1 = new Vector<uint>(c[(p + n)..]);
            var c2 = new Vector<uint>(c[(p + 2 * n)..]);
            var c3 = new Vector<uint>(c[(p + 3 * n)..]);
            Vector<uint> m0 = Vector<uint>.AllBitsSet, m1 = m0, m2 = m0, m3 = m0;
            foreach (var x in xs)
            {
                var lo = new Vector<uint>((uint)x);
                var hi = new Vector<uint>((uint)(x >> 32));
                m0 = Vector.Min(m0, lo + c0 * hi);
                m1 = Vector.Min(m1, lo + c1 * hi);
                m2 = Vector.Min(m2, lo + c2 * hi);
                m3 = Vector.Min(m3, lo + c3 * hi);
            }
            m0.CopyTo(mins[p..]);
            m1.CopyTo(mins[(p + n)..]);
            m2.CopyTo(mins[(p + 2 * n)..]);
            m3.CopyTo(mins[(p + 3 * n)..]);
        }
    }

    /// <summary>As <see cref="MinVector"/> with 16-lane vectors, eight at a time (32 registers hold them and the minima).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void MinVector512(ReadOnlySpan<ulong> xs, ReadOnlySpan<uint> c, Span<uint> mins)
    {
        const int N = 16;
        for (int p = 0; p < c.Length; p += 8 * N)
        {
            var k = c[p..];
            Vector512<uint> c0 = Vector512.Create(k), c1 = Vector512.Create(k[N..]), c2 = Vector512.Create(k[(2 * N)..]), c3 = Vector512.Create(k[(3 * N)..]),
                c4 = Vector512.Create(k[(4 * N)..]), c5 = Vector512.Create(k[(5 * N)..]), c6 = Vector512.Create(k[(6 * N)..]), c7 = Vector512.Create(k[(7 * N)..]);
            Vector512<uint> m0 = Vector512<uint>.AllBitsSet, m1 = m0, m2 = m0, m3 = m0, m4 = m0, m5 = m0, m6 = m0, m7 = m0;
            foreach (var x in xs)
            {
                var lo = Vector512.Create((uint)x);
                var hi = Vector512.Create((uint)(x >> 32));
                m0 = Vector512.Min(m0, lo + c0 * hi);
                m1 = Vector512.Min(m1, lo + c1 * hi);
                m2 = Vector512.Min(m2, lo + c2 * hi);
                m3 = Vector512.Min(m3, lo + c3 * hi);
                m4 = Vector512.Min(m4, lo + c4 * hi);
                m5 = Vector512.Min(m5, lo + c5 * hi);
                m6 = Vector512.Min(m6, lo + c6 * hi);
                m7 = Vector512.Min(m7, lo + c7 * hi);
            }
            var o = mins[p..];
            m0.CopyTo(o); m1.CopyTo(o[N..]); m2.CopyTo(o[(2 * N)..]); m3.CopyTo(o[(3 * N)..]);
            m4.CopyTo(o[(4 * N)..]); m5.CopyTo(o[(5 * N)..]); m6.CopyTo(o[(6 * N)..]); m7.CopyTo(o[(7 * N)..]);
        }
    }

    /// <summary>Share of equal positions: the MinHash estimate of Jaccard similarity.</summary>
    public static double Similarity(ReadOnlySpan<uint> a, ReadOnlySpan<uint> b)
    {
        int same = 0;
        for (int i = 0; i < a.Length; i++) if (a[i] == b[i]) same++;
        return (double)same / a.Length;
    }

    /// <summary>MurmurHash3's 64-bit finaliser: every input bit affects every output bit.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
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
