using Supercluster.Parallelism;

namespace Supercluster.Tests.Parallelism;

/// <summary>
/// The rank grid, sub-communicators, point to point, all-to-all and the autograd region functions on real MPI ranks.
/// Expected values are closed forms of the inputs each scenario builds (exact: small integers in fp32/fp64).
/// </summary>
public class CommunicatorGroupTests
{
    [Fact]
    public void Grid_numbers_ranks_tp_innermost_then_cp_dp_pp_as_megatron()
    {
        var d = new ParallelDims(Tp: 2, Cp: 2, Pp: 2, Dp: 2);
        Assert.Equal([[0, 1], [2, 3], [4, 5], [6, 7], [8, 9], [10, 11], [12, 13], [14, 15]], RankGrid.Groups("tp", d));
        Assert.Equal([0, 2], RankGrid.Groups("cp", d)[0]);
        Assert.Equal([0, 4], RankGrid.Groups("dp", d)[0]);
        Assert.Equal([0, 8], RankGrid.Groups("pp", d)[0]);
        Assert.Equal((1, 0, 1, 1), RankGrid.Coordinates(13, d));
        Assert.Equal(13, RankGrid.WorldRank(1, 0, 1, 1, d));
        Assert.Contains(RankGrid.Describe(d), l => l.Contains("pp groups: [0,8] [1,9]"));
    }

    [Theory]
    [InlineData(8, 3, 1, 1, null, "--tp 3 × --cp 1 × --pp 1 = 3 does not divide the world size 8")]
    [InlineData(8, 2, 1, 2, 3, "--dp 3: tp × cp × pp × dp = 12, expected the world size 8")]
    [InlineData(8, 0, 1, 1, null, "--tp 0: expected a positive integer")]
    public void Dims_that_do_not_fit_the_world_are_refused_naming_the_flag(int world, int tp, int cp, int pp, int? dp, string message)
    {
        var e = Assert.Throws<BadInputException>(() => ParallelDims.For(world, tp, cp, pp, dp));
        Assert.StartsWith(message, e.Message);
        Assert.Equal(new ParallelDims(2, 1, 2, 2), ParallelDims.For(8, tp: 2, pp: 2));
    }

    [Fact]
    public void Split_groups_of_a_tp2_pp2_job_reduce_over_the_right_ranks()
    {
        var reports = MultiRankJob.Run(4, "grid", "2", "1", "2");
        for (int r = 0; r < 4; r++)
        {
            int tp = r % 2, pp = r / 2;
            Assert.Equal([tp, 2, 4 * pp + 1], reports[r].Ints("tp"));      // {2pp, 2pp+1}
            Assert.Equal([pp, 2, 2 * tp + 2], reports[r].Ints("pp"));      // {tp, tp+2}
            Assert.Equal([0, 1, r], reports[r].Ints("dp"));
            Assert.Equal([0, 1, r], reports[r].Ints("cp"));
        }
    }

    [Fact]
    public void Idle_barrier_waits_for_the_last_rank_without_spinning_a_core()
    {
        var reports = MultiRankJob.Run(2, "idle-barrier");
        var first = reports[0].Doubles("idle");
        double waited = first[0], cpu = first[1], lastArrived = first[2];
        // Rank 0 leaves only after rank 1 arrived (~0.6 s late; 0.1 s for start-up skew between the ranks' clocks).
        Assert.True(lastArrived > 0.5, $"rank 1 arrived after {lastArrived:0.000} s; expected its 0.6 s sleep");
        Assert.True(waited > lastArrived - 0.1, $"rank 0 waited {waited:0.000} s but rank 1 arrived after {lastArrived:0.000} s");
        // MPI_Barrier busy-polls: ~1 CPU second per second of waiting. Sleeping between tests costs a few percent; 0.25
        // leaves room for the runtime's own threads on a loaded machine.
        Assert.True(cpu < 0.25 * waited, $"rank 0 used {cpu:0.000} CPU s while waiting {waited:0.000} s");
    }

    [Fact]
    public void Send_receive_and_uneven_all_to_all_deliver_every_block_in_order()
    {
        var reports = MultiRankJob.Run(3, "p2p");
        for (int r = 0; r < 3; r++)
        {
            Assert.Equal(Enumerable.Repeat((double)((r + 2) % 3), 3), reports[r].Doubles("ring"));
            // From each source s: (s+1) copies of 100·s + r.
            var expected = Enumerable.Range(0, 3).SelectMany(s => Enumerable.Repeat(100.0 * s + r, s + 1));
            Assert.Equal(expected, reports[r].Doubles("alltoall"));
        }
        Assert.Equal([7.0, 8.0], reports[1].Doubles("sendrecv"));
    }

    [Fact]
    public void Region_functions_pair_each_forward_collective_with_its_backward()
    {
        var reports = MultiRankJob.Run(2, "regions");
        double[] Up(int n) => [.. Enumerable.Range(1, n).Select(i => (double)i)];
        double[] X(int rank) => [.. Enumerable.Range(0, 8).Select(i => i * (rank + 1.0))];    // [2, 4] row-major
        double[] Cols(double[] m, int width, int from, int count) =>                          // columns [from, from+count) of a [2, width] matrix
            [.. Enumerable.Range(0, 2).SelectMany(row => m.Skip(row * width + from).Take(count))];
        double[] Twice(double[] v) => [.. v.Select(a => 2 * a)];
        for (int r = 0; r < 2; r++)
        {
            var rep = reports[r];
            Assert.Equal(X(r), rep.Doubles("copy.y"));
            Assert.Equal(Twice(Up(8)), rep.Doubles("copy.dx"));                                // all-reduce of two equal upstreams
            Assert.Equal([.. Enumerable.Range(0, 8).Select(i => 3.0 * i)], rep.Doubles("reduce.y"));
            Assert.Equal(Up(8), rep.Doubles("reduce.dx"));
            Assert.Equal([.. X(0).Take(4), .. X(1).Take(4), .. X(0).Skip(4), .. X(1).Skip(4)], rep.Doubles("gather.y"));
            Assert.Equal(Twice(Cols(Up(16), 8, 4 * r, 4)), rep.Doubles("gather.dx"));
            Assert.Equal(Cols([.. Enumerable.Range(0, 8).Select(i => 3.0 * i)], 4, 2 * r, 2), rep.Doubles("scatter.y"));
            Assert.Equal([1, 2, 1, 2, 3, 4, 3, 4], rep.Doubles("scatter.dx"));
            Assert.Equal(Cols(X(r), 4, 2 * r, 2), rep.Doubles("split.y"));
            Assert.Equal([1, 2, 1, 2, 3, 4, 3, 4], rep.Doubles("split.dx"));
        }
    }
}
