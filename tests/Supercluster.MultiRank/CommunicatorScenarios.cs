using Supercluster.Parallelism;
using static TorchSharp.torch;

namespace Supercluster.MultiRank;

/// <summary>Sub-communicators, point to point, all-to-all and the autograd region functions on real MPI ranks.</summary>
static class CommunicatorScenarios
{
    /// <summary>Args: tp cp pp. Reports each group's size/rank and the sum of world ranks over each group (an all-reduce).</summary>
    [Scenario("grid")]
    static void Grid(ScenarioContext ctx)
    {
        var dims = ParallelDims.For(ctx.World.WorldSize, int.Parse(ctx.Arg(0, "1")), int.Parse(ctx.Arg(1, "1")), int.Parse(ctx.Arg(2, "1")));
        using var grid = new RankGrid(ctx.World, dims);
        foreach (var g in new[] { grid.Tp, grid.Cp, grid.Dp, grid.Pp, grid.DpCp })
        {
            using var t = tensor(new double[] { ctx.World.Rank });
            g.AllReduceSum(t);
            ctx.Report(g.Group, new[] { g.Rank, g.WorldSize, (int)t.item<double>() });
        }
    }

    /// <summary>
    /// The last rank arrives at an <see cref="Supercluster.Distributed.ICommunicator.IdleBarrier"/> 600 ms after the
    /// others. Reports [seconds waited, CPU seconds this process used meanwhile, seconds until the last rank arrived].
    /// </summary>
    [Scenario("idle-barrier")]
    static void IdleBarrier(ScenarioContext ctx)
    {
        var w = ctx.World;
        w.Barrier();
        var start = DateTime.UtcNow;
        if (w.Rank == w.WorldSize - 1) Thread.Sleep(600);
        var cpu = System.Diagnostics.Process.GetCurrentProcess().TotalProcessorTime;
        var wall = System.Diagnostics.Stopwatch.StartNew();
        w.IdleBarrier();
        double waited = wall.Elapsed.TotalSeconds;
        double used = (System.Diagnostics.Process.GetCurrentProcess().TotalProcessorTime - cpu).TotalSeconds;
        // When did the last rank arrive? Every rank's arrival time, all-gathered after the barrier.
        using var arrived = tensor(new double[] { w.Rank == w.WorldSize - 1 ? (DateTime.UtcNow - start).TotalSeconds - waited : 0 });
        w.AllReduceSum(arrived);
        ctx.Report("idle", new[] { waited, used, arrived.item<double>() });
    }

    /// <summary>A ring: every rank sends its rank to the next and receives from the previous (SendRecv), then an all-to-all where rank r sends r+1 values to each peer.</summary>
    [Scenario("p2p")]
    static void PointToPoint(ScenarioContext ctx)
    {
        var w = ctx.World;
        int next = (w.Rank + 1) % w.WorldSize, prev = (w.Rank + w.WorldSize - 1) % w.WorldSize;
        using var send = full(3, (double)w.Rank, ScalarType.Float32);
        using var recv = zeros(3);
        w.SendRecv(send, next, recv, prev);
        ctx.Report("ring", ScenarioContext.Values(recv));
        // Rank 0 sends to 1 with Send/Recv.
        using var one = tensor(new float[] { 7, 8 });
        if (w.Rank == 0) w.Send(one, 1);
        if (w.Rank == 1) { using var got = zeros(2); w.Recv(got, 0); ctx.Report("sendrecv", ScenarioContext.Values(got)); }
        // All-to-all with uneven counts: rank r sends (r+1) copies of (100·r + d) to rank d.
        long[] sendCounts = [.. Enumerable.Repeat((long)(w.Rank + 1), w.WorldSize)];
        long[] recvCounts = [.. Enumerable.Range(0, w.WorldSize).Select(s => (long)(s + 1))];
        var input = cat(Enumerable.Range(0, w.WorldSize).Select(d => full(w.Rank + 1, 100.0 * w.Rank + d, ScalarType.Float32)).ToArray());
        using var output = zeros(recvCounts.Sum());
        w.AllToAll(input, sendCounts, output, recvCounts);
        ctx.Report("alltoall", ScenarioContext.Values(output));
    }

    /// <summary>
    /// Region functions: y = Σ_ranks f(x·(rank+1)) through each function; reports outputs and input gradients for a
    /// fixed upstream gradient, which the test checks against the closed forms.
    /// </summary>
    [Scenario("regions")]
    static void Regions(ScenarioContext ctx)
    {
        var w = ctx.World;
        double scale = w.Rank + 1;
        Tensor Input() => (arange(4 * w.WorldSize, dtype: ScalarType.Float64) * scale).reshape(2, 2 * w.WorldSize).requires_grad_(true);

        void Check(string name, Func<Tensor, Tensor> f)
        {
            var x = Input();
            var y = f(x);
            ctx.Report(name + ".y", ScenarioContext.Values(y));
            y.backward([(arange(y.numel(), dtype: ScalarType.Float64) + 1).reshape(y.shape)]);   // upstream gradient 1, 2, 3, …
            ctx.Report(name + ".dx", ScenarioContext.Values(x.grad!));
        }
        Check("copy", x => Region.CopyTo(x, w) * 1.0);
        Check("reduce", x => Region.ReduceFrom(x * 1.0, w));
        Check("gather", x => Region.GatherAlong(x * 1.0, 1, w));
        Check("scatter", x => Region.ReduceScatterAlong(x * 1.0, 1, w));
        Check("split", x => Region.SplitAlong(x * 1.0, 1, w));
    }
}
