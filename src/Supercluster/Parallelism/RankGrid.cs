using Supercluster.Distributed;

namespace Supercluster.Parallelism;

/// <summary>
/// The sizes of the parallel dimensions, as <c>plan</c> names them: tensor (TP), context (CP), pipeline (PP) and data
/// (DP) parallelism, whose product is the world size, and expert parallelism (EP), which splits the data-parallel
/// ranks further (experts sharded over EP ranks inside each DP group, as Megatron-LM and <c>plan</c> place it).
/// </summary>
public sealed record ParallelDims(int Tp = 1, int Cp = 1, int Pp = 1, int Dp = 1, int Ep = 1)
{
    public int World => Tp * Cp * Pp * Dp;

    /// <summary>
    /// The dims for a world of <paramref name="world"/> ranks: DP defaults to world ÷ (TP·CP·PP). Throws
    /// <see cref="BadInputException"/> naming the flag when the sizes do not fit.
    /// </summary>
    public static ParallelDims For(int world, int tp = 1, int cp = 1, int pp = 1, int? dp = null, int ep = 1)
    {
        void Positive(string flag, int v) { if (v < 1) throw new BadInputException($"{flag} {v}: expected a positive integer"); }
        Positive("--tp", tp); Positive("--cp", cp); Positive("--pp", pp); Positive("--ep", ep);
        if (dp is { } d) Positive("--dp", d);
        int modelParallel = tp * cp * pp;
        if (world % modelParallel != 0)
            throw new BadInputException($"--tp {tp} × --cp {cp} × --pp {pp} = {modelParallel} does not divide the world size {world}: expected a divisor of {world}");
        int dataParallel = dp ?? world / modelParallel;
        if (modelParallel * dataParallel != world)
            throw new BadInputException($"--dp {dataParallel}: tp × cp × pp × dp = {modelParallel * dataParallel}, expected the world size {world}");
        if (dataParallel % ep != 0)
            throw new BadInputException($"--ep {ep} does not divide the data-parallel size {dataParallel}: expected a divisor of it (experts are sharded inside the data-parallel group)");
        return new ParallelDims(tp, cp, pp, dataParallel, ep);
    }

    public override string ToString() => $"TP {Tp} × CP {Cp} × PP {Pp} × DP {Dp}{(Ep > 1 ? $" (EP {Ep} inside DP)" : "")}";
}

/// <summary>
/// This rank's place in the grid and one communicator per dimension. Ranks are numbered with TP innermost (neighbours,
/// one node's NVLink domain), then CP, DP and PP outermost, as Megatron-LM orders them:
/// <c>rank = tp + TP·(cp + CP·(dp + DP·pp))</c>. Each group is a split of the world communicator.
/// </summary>
public sealed class RankGrid : IDisposable
{
    readonly List<ICommunicator> _owned = [];

    public RankGrid(ICommunicator world, ParallelDims dims)
    {
        if (dims.World != world.WorldSize)
            throw new BadInputException($"{dims} = {dims.World} ranks, but the job has {world.WorldSize}");
        World = world;
        Dims = dims;
        (TpRank, CpRank, DpRank, PpRank) = Coordinates(world.Rank, dims);
        // Each split: ranks that agree on every other coordinate form one group, ordered by their own coordinate.
        Tp = Split("tp", Key(-1, CpRank, DpRank, PpRank), TpRank);
        Cp = Split("cp", Key(TpRank, -1, DpRank, PpRank), CpRank);
        Dp = Split("dp", Key(TpRank, CpRank, -1, PpRank), DpRank);
        Pp = Split("pp", Key(TpRank, CpRank, DpRank, -1), PpRank);
        // Ranks holding the same parameters (same TP shard and PP stage) average their gradients: DP × CP.
        DpCp = Split("dp_cp", Key(TpRank, -1, -1, PpRank), CpRank + dims.Cp * DpRank);
        // EP: consecutive DP ranks share experts' work; expert gradients average over the ranks holding the same expert.
        EpRank = DpRank % dims.Ep;
        Ep = Split("ep", Key(TpRank, CpRank, DpRank / dims.Ep, PpRank), EpRank);
        ExpertDp = Split("expert_dp", Key(TpRank, CpRank, EpRank, PpRank), DpRank / dims.Ep);
    }

    public ICommunicator World { get; }
    public ParallelDims Dims { get; }
    public int TpRank { get; }
    public int CpRank { get; }
    public int DpRank { get; }
    public int PpRank { get; }
    public int EpRank { get; }

    public ICommunicator Tp { get; }
    public ICommunicator Cp { get; }
    public ICommunicator Dp { get; }
    public ICommunicator Pp { get; }
    /// <summary>Data and context parallel ranks together: the replicas of this rank's parameters.</summary>
    public ICommunicator DpCp { get; }
    public ICommunicator Ep { get; }
    /// <summary>Ranks holding the same experts (the DP group divided by EP): where expert gradients are averaged.</summary>
    public ICommunicator ExpertDp { get; }

    public bool IsFirstStage => PpRank == 0;
    public bool IsLastStage => PpRank == Dims.Pp - 1;

    /// <summary>(tp, cp, dp, pp) of a world rank.</summary>
    public static (int Tp, int Cp, int Dp, int Pp) Coordinates(int rank, ParallelDims d) =>
        (rank % d.Tp, rank / d.Tp % d.Cp, rank / (d.Tp * d.Cp) % d.Dp, rank / (d.Tp * d.Cp * d.Dp));

    /// <summary>The world rank at (tp, cp, dp, pp).</summary>
    public static int WorldRank(int tp, int cp, int dp, int pp, ParallelDims d) => tp + d.Tp * (cp + d.Cp * (dp + d.Dp * pp));

    /// <summary>World ranks of every group of one dimension ("tp", "cp", "dp", "pp"), for printing the grid.</summary>
    public static IReadOnlyList<int[]> Groups(string dim, ParallelDims d)
    {
        var all = Enumerable.Range(0, d.World).Select(r => (Rank: r, C: Coordinates(r, d)));
        Func<(int Tp, int Cp, int Dp, int Pp), (int, int, int, int)> others = dim switch
        {
            "tp" => c => (-1, c.Cp, c.Dp, c.Pp),
            "cp" => c => (c.Tp, -1, c.Dp, c.Pp),
            "dp" => c => (c.Tp, c.Cp, -1, c.Pp),
            "pp" => c => (c.Tp, c.Cp, c.Dp, -1),
            _ => throw new ArgumentException($"unknown dimension {dim}"),
        };
        return [.. all.GroupBy(x => others(x.C)).Select(g => g.Select(x => x.Rank).ToArray())];
    }

    /// <summary>The grid and its groups, one line per dimension larger than one.</summary>
    public static IEnumerable<string> Describe(ParallelDims d)
    {
        yield return $"rank grid: {d} = {d.World} ranks (TP innermost, then CP, DP, PP)";
        foreach (var (dim, size) in new[] { ("tp", d.Tp), ("cp", d.Cp), ("dp", d.Dp), ("pp", d.Pp) })
            if (size > 1) yield return $"  {dim} groups: {string.Join(" ", Groups(dim, d).Select(g => "[" + string.Join(",", g) + "]"))}";
    }

    /// <summary>Seconds in collectives since the last call, per group (each communicator times its own calls).</summary>
    public IReadOnlyDictionary<string, double> TakeCommunicationSeconds()
    {
        var t = new Dictionary<string, double> { ["world"] = World.TakeCommunicationSeconds() };
        foreach (var c in _owned) t[c.Group] = c.TakeCommunicationSeconds();
        return t;
    }

    /// <summary>Bytes this rank sent since the last call, per group (<see cref="ICommunicator.TakeSentBytes"/>).</summary>
    public IReadOnlyDictionary<string, double> TakeSentBytes()
    {
        var b = new Dictionary<string, double> { ["world"] = World.TakeSentBytes() };
        foreach (var c in _owned) b[c.Group] = c.TakeSentBytes();
        return b;
    }

    int Key(int tp, int cp, int dp, int pp) => ((pp + 1) * (Dims.Dp + 1) + (dp + 1)) * (Dims.Cp + 1) * (Dims.Tp + 1) + (cp + 1) * (Dims.Tp + 1) + (tp + 1);

    ICommunicator Split(string group, int color, int key)
    {
        var c = World.WorldSize == 1 ? new SingleProcess(group) : World.Split(color, key, group);
        _owned.Add(c);
        return c;
    }

    public void Dispose()
    {
        for (int i = _owned.Count - 1; i >= 0; i--) _owned[i].Dispose();
        _owned.Clear();
    }
}
