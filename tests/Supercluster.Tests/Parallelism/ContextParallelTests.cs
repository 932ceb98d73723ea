using Supercluster.Parallelism;

namespace Supercluster.Tests.Parallelism;

/// <summary>
/// Context parallelism (load-balanced chunks, keys/values all-gathered) equals one process on the whole sequence.
/// Tolerance 1e-5 relative: fp32 sums over a different grouping of the same terms (reduce-scatter, all-reduce).
/// </summary>
public class ContextParallelTests
{
    [Fact]
    public void Chunks_are_load_balanced_for_the_causal_mask()
    {
        Assert.Equal([0L, 1, 14, 15], ContextParallel.LocalPositions(16, 0, 4));
        Assert.Equal([6L, 7, 8, 9], ContextParallel.LocalPositions(16, 3, 4));
        // Every position held exactly once across ranks.
        var all = Enumerable.Range(0, 4).SelectMany(r => ContextParallel.LocalPositions(16, r, 4)).Order();
        Assert.Equal(Enumerable.Range(0, 16).Select(i => (long)i), all);
        // Work (keys each query sees) is the same on every rank: Σ(p+1) over its positions.
        var work = Enumerable.Range(0, 4).Select(r => ContextParallel.LocalPositions(16, r, 4).Sum(p => p + 1)).Distinct();
        Assert.Single(work);
        var e = Assert.Throws<BadInputException>(() => ContextParallel.LocalPositions(12, 0, 4));
        Assert.Contains("--cp 4", e.Message);
    }

    [Fact]
    public void Local_tokens_follow_the_chunks_row_by_row()
    {
        long[] batch = [.. Enumerable.Range(0, 16)];                       // B = 2, T = 8
        Assert.Equal([0L, 1, 6, 7, 8, 9, 14, 15], ContextParallel.LocalTokens(batch, 2, 8, 0, 2));
        Assert.Equal([2L, 3, 4, 5, 10, 11, 12, 13], ContextParallel.LocalTokens(batch, 2, 8, 1, 2));
    }

    [Theory]
    [InlineData(2, "gpt2")]
    [InlineData(2, "llama")]
    [InlineData(4, "llama")]
    public void Cp_loss_and_gradients_equal_one_process(int ranks, string family)
    {
        var reports = MultiRankJob.Run(ranks, "cp", family);
        foreach (var r in reports)
        {
            var loss = r.Doubles("loss");
            Assert.True(Math.Abs(loss[0] - loss[1]) <= 1e-5 * Math.Abs(loss[1]), $"cp loss {loss[0]} vs one process {loss[1]}");
            double worst = r.GetProperty("worst_grad_rel").GetDouble();
            Assert.True(worst <= 1e-5, $"gradient of {r.GetProperty("worst_grad_name").GetString()} differs by {worst:E2} (relative to its largest element)");
            Assert.True(r.GetProperty("params").GetInt32() > 10);
        }
    }
}
