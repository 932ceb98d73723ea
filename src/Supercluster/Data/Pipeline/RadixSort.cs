using System.Numerics;
using System.Runtime.CompilerServices;

namespace Supercluster.Data.Pipeline;

/// <summary>One LSH band key of one document: what near deduplication exchanges, sorts and groups.</summary>
public readonly record struct BandKey(ulong Key, long Id);

/// <summary>
/// Stable sort of band keys by key. Keys are hashes, so one counting pass on their top bits splits n keys into ~n/8
/// buckets of a few keys each, which an insertion sort finishes while copying them back: two passes over the records,
/// where a least-significant-digit radix sort makes eight. A bucket that is not small (keys that are not spread, as in
/// the tests) is finished by that LSD sort, 8 bits per pass, skipping digits all its keys share. Array.Sort is not
/// used: its instantiation starts in the runtime's unoptimised tier in every prepare process, and it is not stable.
/// </summary>
public static class RadixSort
{
    const int Small = 32;

    /// <summary>Sorts <paramref name="items"/> by key, equal keys in their order; <paramref name="scratch"/>: at least as long, overwritten.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // once per band round over millions of keys: no slow first tier
    public static void SortByKey(Span<BandKey> items, Span<BandKey> scratch)
    {
        int n = items.Length;
        if (scratch.Length < n) throw new ArgumentException($"scratch holds {scratch.Length} keys, expected at least {n}");
        if (n <= Small) { InsertionSort(items); return; }
        int bits = Math.Clamp(BitOperations.Log2((uint)n) - 3, 1, 20), shift = 64 - bits;
        var start = new int[(1 << bits) + 1];
        foreach (var item in items) start[(int)(item.Key >> shift) + 1]++;
        for (int b = 1; b < start.Length; b++) start[b] += start[b - 1];
        var next = start.AsSpan(0, 1 << bits).ToArray();
        foreach (var item in items) scratch[next[(int)(item.Key >> shift)]++] = item;
        for (int b = 0; b + 1 < start.Length; b++)
        {
            int s = start[b], e = start[b + 1];
            if (e - s <= Small) InsertInto(scratch[s..e], items[s..e]);
            else { scratch[s..e].CopyTo(items[s..e]); Lsd(items[s..e], scratch[s..e]); }
        }
    }

    /// <summary>Copies <paramref name="from"/> into <paramref name="to"/> in key order, each after the equal keys before it.</summary>
    static void InsertInto(Span<BandKey> from, Span<BandKey> to)
    {
        for (int i = 0; i < from.Length; i++)
        {
            var item = from[i];
            int j = i;
            while (j > 0 && to[j - 1].Key > item.Key) { to[j] = to[j - 1]; j--; }
            to[j] = item;
        }
    }

    static void InsertionSort(Span<BandKey> items)
    {
        for (int i = 1; i < items.Length; i++)
        {
            var item = items[i];
            int j = i;
            while (j > 0 && items[j - 1].Key > item.Key) { items[j] = items[j - 1]; j--; }
            items[j] = item;
        }
    }

    /// <summary>Least-significant digit first, 8 bits per pass; a pass is skipped when every key has the same byte there.</summary>
    static void Lsd(Span<BandKey> items, Span<BandKey> temp)
    {
        int n = items.Length;
        Span<int> counts = stackalloc int[8 * 256];
        counts.Clear();
        foreach (var item in items)
            for (int d = 0; d < 8; d++) counts[d * 256 + (int)(item.Key >> (8 * d) & 0xFF)]++;
        Span<int> next = stackalloc int[256];
        Span<BandKey> from = items, to = temp;
        for (int d = 0; d < 8; d++)
        {
            var c = counts.Slice(d * 256, 256);
            if (c[(int)(items[0].Key >> (8 * d) & 0xFF)] == n) continue; // one byte value in this digit: the pass changes nothing
            for (int b = 0, at = 0; b < 256; b++) { next[b] = at; at += c[b]; }
            int shift = 8 * d;
            foreach (var item in from) to[next[(int)(item.Key >> shift & 0xFF)]++] = item;
            var t = from; from = to; to = t;
        }
        if (from != items) from.CopyTo(items);
    }
}
