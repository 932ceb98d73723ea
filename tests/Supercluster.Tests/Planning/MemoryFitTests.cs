using Supercluster.Planning;

namespace Supercluster.Tests.Planning;

public class MemoryFitTests
{
    [Fact]
    public void TooBigForAnyLayoutSaysSoAndWhy()
    {
        // 1T parameters × 16 bytes of model state = 16 TB; even fully sharded (ZeRO-3) over 8 GPUs that is 2 TB per 32 GB V100.
        var m = ModelCatalog.Get("megatron-1t");
        var result = LayoutSearch.Search(PlanTestData.Inputs(m, "V100", 8, new ParallelLayout(), batchSequences: 64, precision: Precision.Fp16));
        Assert.Null(result.Best);
        Assert.True(result.Legal > 0);
        Assert.Equal(0, result.Fitting);
        Assert.NotNull(result.SmallestFootprint);
        Assert.True(result.SmallestFootprint!.Memory.TotalBytes > 16e12 / 8 * 0.99);
        Assert.Contains("fits no layout", result.Reason);
        Assert.Contains("smallest footprint", result.Reason);
    }

    [Fact]
    public void SearchFallsBackToFewerGpusWhenNothingElseDivides()
    {
        // 7 heads, 7 layers, 7 sequences of 7 tokens on 2 GPUs: TP 2 ∤ 7 heads, PP 2 ∤ 7 layers, DP 2 ∤ 7 sequences, CP 2 ∤ 7 tokens,
        // so the only legal layouts use 1 GPU and leave the other idle.
        var m = new ModelSpec("odd", 7, 7 * 64, 7, 7, 4 * 7 * 64, 1000, DefaultSeqLen: 7);
        var result = LayoutSearch.Search(PlanTestData.Inputs(m, "H100-SXM", 2, new ParallelLayout(), batchSequences: 7));
        Assert.NotNull(result.Best);
        Assert.Equal(1, result.Best!.GpusUsed);
        Assert.Equal(2, result.Best.GpusAvailable);
    }

    [Fact]
    public void Llama8BDoesNotFitOneH100WithoutSharding()
    {
        // 16 bytes × 8.03e9 = 128.5 GB of model state > 80 GB.
        var m = ModelCatalog.Get("llama3-8b");
        var r = Planner.Plan(PlanTestData.Inputs(m, "H100-SXM", 1, new ParallelLayout(Zero: 0), batchSequences: 8));
        Assert.False(r.Fits);
        Assert.True(r.Memory.WeightsBytes + r.Memory.GradientsBytes + r.Memory.OptimizerBytes > 128e9);
    }

    [Fact]
    public void SearchFindsAFittingLayoutAndRanksByTime()
    {
        var m = ModelCatalog.Get("llama3-8b");
        var result = LayoutSearch.Search(PlanTestData.Inputs(m, "H100-SXM", 64, new ParallelLayout(), batchSequences: 512));
        Assert.NotNull(result.Best);
        Assert.True(result.Best!.Fits);
        Assert.True(result.Top.Zip(result.Top.Skip(1)).All(p => p.First.WallClockDays <= p.Second.WallClockDays));
        // model state alone on one GPU is 128 GB: a fitting layout must shard it (ZeRO ≥ 1 over DP, or TP/PP)
        var l = result.Best.Parallelism;
        Assert.True(l.Zero >= 1 || l.Tp * l.Pp > 1);
    }
}
