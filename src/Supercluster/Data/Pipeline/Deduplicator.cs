using System.Buffers.Binary;
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
    public List<DuplicateCluster> Exact()
    {
        var send = Buckets();
        foreach (var rec in RankSpill.ReadIndex(staging, Rank))
        {
            var w = send[(int)((ulong)rec.Key % (ulong)World)];
            Span<byte> b = stackalloc byte[24];
            BinaryPrimitives.WriteUInt128LittleEndian(b, rec.Key);
            BinaryPrimitives.WriteInt64LittleEndian(b[16..], offsets[Rank] + rec.Ordinal);
            w.Write(b);
        }
        var received = new List<(UInt128 Key, long Id)>();
        foreach (var part in comm.AllToAllBytes([.. send.Select(s => s.ToArray())]))
            for (int i = 0; i + 24 <= part.Length; i += 24)
                received.Add((BinaryPrimitives.ReadUInt128LittleEndian(part.AsSpan(i)), BinaryPrimitives.ReadInt64LittleEndian(part.AsSpan(i + 16))));
        received.Sort();
        var clusters = new List<DuplicateCluster>();
        for (int i = 0; i < received.Count;)
        {
            int j = i + 1;
            while (j < received.Count && received[j].Key == received[i].Key) j++;
            if (j - i > 1) clusters.Add(new("exact", received[i].Id, [.. received.Skip(i + 1).Take(j - i - 1).Select(x => x.Id)]));
            i = j;
        }
        return Gather(clusters, "exact");
    }

    /// <summary>Near-duplicate clusters among documents not in <paramref name="skip"/>.</summary>
    public List<DuplicateCluster> Near(LshBands lsh, int permutations, double threshold, IReadOnlySet<long> skip)
    {
        using var store = new SignatureStore(staging, offsets, permutations);
        var edges = new HashSet<(long, long)>();
        var tried = new HashSet<(long, long)>();
        var sig = new ulong[permutations];
        var a = new ulong[permutations];
        var b = new ulong[permutations];
        for (int band = 0; band < lsh.Bands; band++)
        {
            var send = Buckets();
            Span<byte> rec = stackalloc byte[16];
            long first = offsets[Rank], count = offsets[Rank + 1] - offsets[Rank];
            foreach (var r in RankSpill.ReadIndex(staging, Rank))
            {
                long id = first + r.Ordinal;
                if (skip.Contains(id)) continue;
                store.Read(id, sig);
                if (sig[0] == ulong.MaxValue) continue; // no words
                ulong key = lsh.Key(sig, band);
                BinaryPrimitives.WriteUInt64LittleEndian(rec, key);
                BinaryPrimitives.WriteInt64LittleEndian(rec[8..], id);
                send[(int)(key % (ulong)World)].Write(rec);
            }
            var received = new List<(ulong Key, long Id)>();
            foreach (var part in comm.AllToAllBytes([.. send.Select(s => s.ToArray())]))
                for (int i = 0; i + 16 <= part.Length; i += 16)
                    received.Add((BinaryPrimitives.ReadUInt64LittleEndian(part.AsSpan(i)), BinaryPrimitives.ReadInt64LittleEndian(part.AsSpan(i + 8))));
            received.Sort();
            for (int i = 0; i < received.Count;)
            {
                int j = i + 1;
                while (j < received.Count && received[j].Key == received[i].Key) j++;
                for (int m = i + 1; m < j; m++)
                {
                    long id = received[m].Id;
                    for (int e = i; e < m && e < i + VerifyPerCandidate; e++)
                    {
                        var pair = (received[e].Id, id);
                        if (edges.Contains(pair)) break;
                        if (!tried.Add(pair)) continue;
                        store.Read(pair.Item1, a);
                        store.Read(id, b);
                        if (MinHash.Similarity(a, b) >= threshold) { edges.Add(pair); break; }
                    }
                }
                i = j;
            }
        }
        // Union-find over every rank's verified pairs; only ids that have a pair are held.
        var all = new List<(long, long)>();
        var mine = new byte[edges.Count * 16];
        int k = 0;
        foreach (var (x, y) in edges.Order())
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
        return [.. parent.Keys.ToList().GroupBy(Find).Where(g => g.Count() > 1).OrderBy(g => g.Key)
            .Select(g => new DuplicateCluster("near", g.Key, [.. g.Where(x => x != g.Key).Order()]))];
    }

    MemoryStream[] Buckets() => [.. Enumerable.Range(0, World).Select(_ => new MemoryStream())];

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
