using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Supercluster.Distributed;

namespace Supercluster.Data.Pipeline;

/// <summary>One group of duplicates: the document kept (the first in input order) and the ones removed.</summary>
public sealed record DuplicateCluster(string Stage, long Kept, long[] Removed);

/// <summary>
/// Deduplication across ranks. Keys are partitioned by hash: every rank sends each key to rank key mod W, which sees all
/// documents with that key and decides; results are all-gathered (they are small: duplicates only).
/// Exact: groups of equal 128-bit keys of normalised text; the smallest document id is kept.
/// Near: for each LSH band in turn (memory holds one band), documents with an equal band key are candidates; each
/// candidate is verified against up to <see cref="VerifyPerCandidate"/> earlier members of its bucket by the MinHash
/// estimate (≥ threshold); verified pairs are merged by union-find and each component keeps its smallest id.
/// All steps depend only on document ids and content, so the result is the same for any number of ranks.
/// </summary>
public sealed class Deduplicator(ICommunicator comm, string staging, long[] offsets)
{
    public const int VerifyPerCandidate = 8;
    int Rank => comm.Rank;
    int World => comm.WorldSize;

    /// <summary>Exact duplicate clusters (every rank gets all of them).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // runs once per prepare, with loops over every document: no slow first tier
    public List<DuplicateCluster> Exact()
    {
        var send = Buckets<(UInt128 Key, long Id)>();
        foreach (var rec in RankSpill.ReadIndex(staging, Rank))
            send[(int)((ulong)rec.Key % (ulong)World)].Add((rec.Key, offsets[Rank] + rec.Ordinal));
        var received = Exchange(send);
        // Sorted by the keys' upper 64 bits (the radix sort of band keys; Array.Sort of UInt128 runs unoptimised code in
        // a prepare process), then each run of equal upper halves is split by the whole key.
        var order = new BandKey[received.Length];
        for (int i = 0; i < order.Length; i++) order[i] = new((ulong)(received[i].Key >> 64), i);
        RadixSort.SortByKey(order, new BandKey[order.Length]);
        var clusters = new List<DuplicateCluster>();
        var run = new List<(UInt128 Key, long Id)>();
        for (int i = 0; i < order.Length;)
        {
            int j = i + 1;
            while (j < order.Length && order[j].Key == order[i].Key) j++;
            if (j - i > 1)
            {
                run.Clear();
                for (int q = i; q < j; q++) run.Add(received[order[q].Id]);
                while (run.Count > 1)
                {
                    var key = run[0].Key;
                    var ids = new List<long>();
                    for (int q = run.Count - 1; q >= 0; q--)
                        if (run[q].Key == key) { ids.Add(run[q].Id); run.RemoveAt(q); }
                    if (ids.Count < 2) continue;
                    ids.Sort();
                    clusters.Add(new("exact", ids[0], ids.GetRange(1, ids.Count - 1).ToArray()));
                }
            }
            i = j;
        }
        return Gather(clusters, "exact"); // in kept-id order
    }

    /// <summary>Bytes of band keys one round of <see cref="Near"/> may hold on a rank (as many bands per round as fit, at least one).</summary>
    public const long NearKeyBytesPerRound = 256L << 20;

    /// <summary>Near-duplicate clusters among documents not in <paramref name="skip"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // runs once per prepare, with loops over every document: no slow first tier
    /// <param name="threads">threads for the band keys (this rank's share of the cores); the result does not depend on it.</param>
    public List<DuplicateCluster> Near(LshBands lsh, int permutations, double threshold, IReadOnlySet<long> skip, int threads = 1)
    {
        using var store = new SignatureStore(staging, offsets, permutations);
        var edges = new HashSet<(long, long)>();
        var tried = new HashSet<(long, long)>();
        // This rank's candidates: rows not removed as exact duplicates and with words.
        var rows = new List<(long Row, long Id)>();
        for (long row = 0; row < store.Rows(Rank); row++)
        {
            long id = store.IdOf(Rank, row);
            if (!skip.Contains(id) && !RankSpill.HasNoWords(store.Row(Rank, row))) rows.Add((row, id));
        }
        // All ranks take the same number of bands per round (from the largest rank's count), so the rounds line up.
        long most = 0;
        for (int r = 0; r < World; r++) most = Math.Max(most, offsets[r + 1] - offsets[r]);
        int perRound = (int)Math.Clamp(NearKeyBytesPerRound / Math.Max(1, 16 * most), 1, lsh.Bands);
        // One pair of buffers for every round (fresh memory is the costly kind: each round used to allocate ~1.2 GB of
        // lists, byte copies and sort arrays at 2 GB of corpus).
        var keys = new BandKey[(long)rows.Count * perRound];
        BandKey[] scratch = [];
        var bucket = new List<long>();
        for (int band0 = 0; band0 < lsh.Bands; band0 += perRound)
        {
            int bands = Math.Min(perRound, lsh.Bands - band0), n = rows.Count * bands;
            // Row i's keys at i·bands…: each thread fills its own rows' slots (and faults in its part of the buffer), so
            // the order is the one loop's whatever the thread count.
            int parts = Math.Clamp(threads, 1, Math.Max(1, rows.Count / 4096));
            Parallel.For(0, parts, new ParallelOptions { MaxDegreeOfParallelism = parts }, part =>
            {
                for (int i = (int)((long)rows.Count * part / parts), end = (int)((long)rows.Count * (part + 1) / parts); i < end; i++)
                {
                    var (row, id) = rows[i];
                    var sig = store.Row(Rank, row);
                    for (int band = band0, at = i * bands; band < band0 + bands; band++, at++)
                        keys[at] = new(lsh.Key(sig, band), id); // seeded by the band: keys of different bands differ
                }
            });
            // Each key goes to rank key mod W, which sees every document with that key (one rank: no exchange).
            Span<BandKey> received = World == 1 ? keys.AsSpan(0, n) : Exchange(keys.AsSpan(0, n));
            if (scratch.Length < received.Length) scratch = new BandKey[Math.Max(received.Length, keys.Length)];
            // Every bucket in id order, so the verification is the same for any rank count (the sort is stable).
            RadixSort.SortByKey(received, scratch);
            for (int i = 0; i < received.Length;)
            {
                int j = i + 1;
                while (j < received.Length && received[j].Key == received[i].Key) j++;
                if (j - i > 1)
                {
                    bucket.Clear();
                    for (int q = i; q < j; q++) bucket.Add(received[q].Id);
                    bucket.Sort();
                    Verify(bucket, store, threshold, edges, tried);
                }
                i = j;
            }
        }
        // Union-find over every rank's verified pairs; only ids that have a pair are held.
        var all = new List<(long, long)>();
        var mine = new byte[edges.Count * 16];
        var sorted = new (long, long)[edges.Count];
        edges.CopyTo(sorted);
        Array.Sort(sorted);
        int k = 0;
        foreach (var (x, y) in sorted)
        {
            BinaryPrimitives.WriteInt64LittleEndian(mine.AsSpan(k), x);
            BinaryPrimitives.WriteInt64LittleEndian(mine.AsSpan(k + 8), y);
            k += 16;
        }
        foreach (var part in comm.AllGatherBytes(mine))
            for (int i = 0; i + 16 <= part.Length; i += 16)
                all.Add((BinaryPrimitives.ReadInt64LittleEndian(part.AsSpan(i)), BinaryPrimitives.ReadInt64LittleEndian(part.AsSpan(i + 8))));
        var parent = new Dictionary<long, long>();
        long Find(long x)
        {
            long root = x;
            while (parent.TryGetValue(root, out var p) && p != root) root = p;
            while (x != root) { long p = parent[x]; parent[x] = root; x = p; }
            return root;
        }
        foreach (var (x, y) in all)
        {
            long rx = Find(x), ry = Find(y);
            parent.TryAdd(rx, rx); parent.TryAdd(ry, ry);
            if (rx != ry) parent[Math.Max(rx, ry)] = Math.Min(rx, ry); // the root is always the smallest id
        }
        // Components by root (the smallest id), each with its other members ascending. Loops rather than LINQ: each
        // LINQ instantiation here is JIT work in every prepare process.
        var members = new Dictionary<long, List<long>>();
        var ids = new long[parent.Count];
        parent.Keys.CopyTo(ids, 0);
        foreach (var id in ids)
        {
            long root = Find(id);
            if (id == root) continue;
            if (!members.TryGetValue(root, out var list)) members[root] = list = [];
            list.Add(id);
        }
        var roots = new long[members.Count];
        members.Keys.CopyTo(roots, 0);
        Array.Sort(roots);
        var clusters = new List<DuplicateCluster>(roots.Length);
        foreach (var root in roots)
        {
            var removed = members[root].ToArray();
            Array.Sort(removed);
            clusters.Add(new DuplicateCluster("near", root, removed));
        }
        return clusters;
    }

    /// <summary>Each member of a band bucket (ids ascending) against up to <see cref="VerifyPerCandidate"/> earlier members.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // runs once per prepare, with loops over every document: no slow first tier
    static void Verify(List<long> bucket, SignatureStore store, double threshold, HashSet<(long, long)> edges, HashSet<(long, long)> tried)
    {
        for (int m = 1; m < bucket.Count; m++)
        {
            long id = bucket[m];
            for (int e = 0; e < m && e < VerifyPerCandidate; e++)
            {
                var pair = (bucket[e], id);
                if (edges.Contains(pair)) break;
                if (!tried.Add(pair)) continue;
                if (MinHash.Similarity(store.Read(pair.Item1), store.Read(id)) >= threshold) { edges.Add(pair); break; }
            }
        }
    }

    List<T>[] Buckets<T>(int capacity = 0)
    {
        var buckets = new List<T>[World];
        for (int r = 0; r < World; r++) buckets[r] = new List<T>(capacity);
        return buckets;
    }

    /// <summary>One all-to-all of fixed-size records: list r goes to rank r; what every rank sent here, in rank order.</summary>
    T[] Exchange<T>(List<T>[] send) where T : unmanaged
    {
        if (send.Length == 1) return [.. send[0]];
        var counts = new int[send.Length];
        for (int r = 0; r < send.Length; r++) counts[r] = send[r].Count * Unsafe.SizeOf<T>();
        var flat = new T[send.Sum(l => (long)l.Count)];
        for (int r = 0, at = 0; r < send.Length; at += send[r].Count, r++) CollectionsMarshal.AsSpan(send[r]).CopyTo(flat.AsSpan(at));
        return MemoryMarshal.Cast<byte, T>(comm.AllToAllFlat(MemoryMarshal.AsBytes(flat.AsSpan()), counts)).ToArray();
    }

    /// <summary>Band keys to rank key mod W, in their order (a stable counting scatter); what every rank sent here, in rank order.</summary>
    Span<BandKey> Exchange(ReadOnlySpan<BandKey> keys)
    {
        var counts = new int[World];
        foreach (var k in keys) counts[(int)(k.Key % (ulong)World)]++;
        var next = new int[World];
        for (int r = 1; r < World; r++) next[r] = next[r - 1] + counts[r - 1];
        var send = new BandKey[keys.Length];
        foreach (var k in keys) send[next[(int)(k.Key % (ulong)World)]++] = k;
        for (int r = 0; r < World; r++) counts[r] *= Unsafe.SizeOf<BandKey>();
        return MemoryMarshal.Cast<byte, BandKey>(comm.AllToAllFlat(MemoryMarshal.AsBytes(send.AsSpan()), counts).AsSpan());
    }

    /// <summary>Every rank's clusters, in kept-id order, on every rank.</summary>
    List<DuplicateCluster> Gather(List<DuplicateCluster> local, string stage)
    {
        var ms = new MemoryStream();
        var w = new BinaryWriter(ms);
        foreach (var c in local)
        {
            w.Write(c.Kept);
            w.Write(c.Removed.Length);
            foreach (var id in c.Removed) w.Write(id);
        }
        var result = new List<DuplicateCluster>();
        foreach (var part in comm.AllGatherBytes(ms.ToArray()))
        {
            var r = new BinaryReader(new MemoryStream(part));
            while (r.BaseStream.Position < part.Length)
            {
                long kept = r.ReadInt64();
                var removed = new long[r.ReadInt32()];
                for (int i = 0; i < removed.Length; i++) removed[i] = r.ReadInt64();
                result.Add(new(stage, kept, removed));
            }
        }
        result.Sort((x, y) => x.Kept.CompareTo(y.Kept));
        return result;
    }
}
