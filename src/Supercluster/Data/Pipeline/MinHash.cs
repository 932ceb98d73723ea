using System.IO.Hashing;
using System.Runtime.InteropServices;
using System.Text;

namespace Supercluster.Data.Pipeline;

/// <summary>
/// MinHash (Broder 1997) over word n-gram shingles. Each shingle is hashed once with 64-bit xxHash3; permutation i is
/// the universal hash h_i(x) = (a_i·x + b_i) mod (2⁶¹−1) with (a_i, b_i) drawn from SplitMix64(seed), as datasketch does.
/// The share of equal positions in two signatures estimates the Jaccard similarity of their shingle sets
/// (standard error √(J(1−J)/P)). A document shorter than n words is one shingle.
/// </summary>
public sealed class MinHash
{
    const ulong Prime = (1UL << 61) - 1;
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
            _a[i] = SplitMix(ref s) % (Prime - 1) + 1;
            _b[i] = SplitMix(ref s) % Prime;
        }
    }

    public int Permutations { get; }
    public int Ngram { get; }

    /// <summary>Signature of a word sequence, or null when it has no words.</summary>
    public ulong[]? Signature(IReadOnlyList<string> words)
    {
        if (words.Count == 0) return null;
        var sig = new ulong[Permutations];
        Array.Fill(sig, ulong.MaxValue);
        int shingles = Math.Max(1, words.Count - Ngram + 1);
        var buffer = new StringBuilder();
        for (int s = 0; s < shingles; s++)
        {
            buffer.Clear();
            for (int w = s; w < Math.Min(words.Count, s + Ngram); w++) buffer.Append(words[w]).Append('\u001f');
            ulong x = XxHash3.HashToUInt64(MemoryMarshal.AsBytes(buffer.ToString().AsSpan())) % Prime;
            for (int i = 0; i < sig.Length; i++)
            {
                ulong h = MulAddMod(_a[i], x, _b[i]);
                if (h < sig[i]) sig[i] = h;
            }
        }
        return sig;
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
