using Supercluster.Planning;

namespace Supercluster.Tests.Planning;

/// <summary>Each formula against a value computed by hand (arithmetic in the comments).</summary>
public class FormulaTests
{
    [Fact]
    public void Gpt3ParameterCountIs12Lh2PlusEmbedding()
    {
        // 12·h²·L = 12·12288²·96 = 173,946,175,488; tied embedding V·h = 50257·12288 = 617,558,016.
        Assert.Equal(174_563_733_504L, ModelCatalog.Get("gpt3-175b").TotalParams);
    }

    [Fact]
    public void Llama3_8bParameterCountMatchesPublished8_03B()
    {
        // per layer: attention 2·4096² + 2·4096·1024 = 41,943,040; SwiGLU 3·4096·14336 = 176,160,768 → ×32 = 6,979,321,856;
        // untied embeddings 2·128256·4096 = 1,050,673,152; total 8,029,995,008 (Meta: "8.03B").
        Assert.Equal(8_029_995_008L, ModelCatalog.Get("llama3-8b").TotalParams);
    }

    [Fact]
    public void Grok1IsAbout314BTotalAnd86BActive()
    {
        // xAI: 314B parameters, 25% of weights active per token.
        var m = ModelCatalog.Get("grok1-314b");
        Assert.InRange(m.TotalParams, 314e9 * 0.99, 314e9 * 1.01);
        Assert.InRange(m.ActiveParams / (double)m.TotalParams, 0.24, 0.29);
    }

    [Fact]
    public void ModelFlopsEqualMegatronEquation3()
    {
        // Narayanan et al. 2021 eq. 3: F = 72·B·s·L·h²·(1 + s/(6h) + V/(12·h·L)) per iteration; per token divide by B·s.
        var m = ModelCatalog.Get("gpt3-175b");
        double s = 2048, L = 96, h = 12288, V = 50257;
        double megatron = 72 * L * h * h * (1 + s / (6 * h) + V / (12 * h * L));
        Assert.Equal(megatron, FlopsModel.ModelFlopsPerToken(m, 2048), megatron * 1e-12);
    }

    [Fact]
    public void FullRecomputeFlopsEqualMegatronWithRecomputation()
    {
        // With activation recomputation Narayanan et al. use 96·B·s·L·h²·(1 + s/(6h) + V/(16·h·L)).
        var m = ModelCatalog.Get("gpt3-175b");
        double s = 2048, L = 96, h = 12288, V = 50257;
        double megatron = 96 * L * h * h * (1 + s / (6 * h) + V / (16 * h * L));
        Assert.Equal(megatron, FlopsModel.HardwareFlopsPerToken(m, 2048, Recompute.Full), megatron * 1e-12);
    }

    [Fact]
    public void RingAllReduceMoves2NMinus1OverNOfTheBuffer()
    {
        // 1 GB over 8 ranks at 100 GB/s: 2·7/8·1e9/1e11 = 0.0175 s; + 2·7 hops × 10 µs = 0.00014 s.
        Assert.Equal(0.0175, Collectives.RingAllReduce(1e9, 8, 1e11, 0), 12);
        Assert.Equal(0.01764, Collectives.RingAllReduce(1e9, 8, 1e11, 10e-6), 12);
        Assert.Equal(0, Collectives.RingAllReduce(1e9, 1, 1e11, 10e-6));
        // reduce-scatter is half an all-reduce: 7/8·1e9/1e11 = 0.00875 s.
        Assert.Equal(0.00875, Collectives.ReduceScatter(1e9, 8, 1e11, 0), 12);
    }

    [Theory]
    [InlineData(4, 1, 3.0 / 15)] // m = 12 micro-batches: (p−1)/(m+p−1) = 3/15
    [InlineData(3, 1, 2.0 / 14)] // 2/14
    [InlineData(3, 2, 2.0 / 26)] // interleaved, v = 2 (12 layers = 3 stages × 2 chunks × 2): (p−1)/(v·m+p−1) = 2/26
    public void PipelineBubbleFraction(int pp, int v, double expected)
    {
        // TP = DP = 1 so nothing but compute stretches a micro-batch's slot.
        var m = ModelCatalog.Get("gpt2-124m");
        var inputs = PlanTestData.Inputs(m, "H100-SXM", pp, new ParallelLayout(Tp: 1, Pp: pp, Dp: 1, Interleave: v), batchSequences: 12);
        var step = StepTimeModel.Estimate(m, inputs.Run, inputs.Layout, inputs.Cluster, inputs.Overlap);
        Assert.Equal(12, step.MicroBatches);
        Assert.Equal(expected, step.Bubble / (step.Compute + step.Bubble), 12);
    }

    [Fact]
    public void YoungAndDalyIntervals()
    {
        // δ = 50 s, M = 10,000 s. Young: √(2·50·10000) = 1000 s.
        // Daly: 1000·(1 + √(50/20000)/3 + 50/180000) − 50 = 1000·(1 + 0.0166667 + 0.0002778) − 50 = 966.944 s.
        Assert.Equal(1000, ReliabilityModel.YoungInterval(50, 10_000), 9);
        Assert.Equal(966.9444, ReliabilityModel.DalyInterval(50, 10_000), 3);
        // δ ≥ 2M: checkpoint once per MTBF.
        Assert.Equal(100, ReliabilityModel.DalyInterval(500, 100));
    }

    [Fact]
    public void GoodputCountsCheckpointsReworkAndRestarts()
    {
        // τ = 1000, δ = 50, R = 600, M = 10000: 1000/1050 · (1 − (600 + 525)/10000) = 0.952381 · 0.8875 = 0.845238.
        Assert.Equal(0.845238, ReliabilityModel.Goodput(1000, 50, 600, 10_000), 6);
    }

    [Fact]
    public void MtbfScalesInverselyWithNodes()
    {
        // 4 failures per 1000 node-days on 1000 nodes: 4 per day, MTBF 6 h = 21,600 s.
        Assert.Equal(21_600, ReliabilityModel.MtbfSeconds(4, 1000), 9);
    }

    [Theory]
    // ZeRO paper (Rajbhandari et al. 2020), Figure 1: 7.5B parameters, DP 64: 120 GB, 31.4 GB, 16.6 GB, 1.9 GB per GPU,
    // i.e. bytes per parameter 16, 2+2+12/64 = 4.1875, 2+14/64 = 2.21875, 16/64 = 0.25.
    [InlineData(0, 16.0)]
    [InlineData(1, 4.1875)]
    [InlineData(2, 2.21875)]
    [InlineData(3, 0.25)]
    public void ZeroStagesShardModelStates(int zero, double bytesPerParam)
    {
        var m = ModelCatalog.Get("llama3-8b");
        var inputs = PlanTestData.Inputs(m, "H100-SXM", 64, new ParallelLayout(Tp: 1, Pp: 1, Dp: 64, Zero: zero), batchSequences: 64);
        var mem = MemoryModel.Estimate(m, inputs.Run, inputs.Layout, inputs.Cluster.Gpu);
        double states = mem.WeightsBytes + mem.GradientsBytes + mem.OptimizerBytes;
        Assert.Equal(bytesPerParam, states / m.TotalParams, 9);
    }

    [Theory]
    // Korthikanti et al. 2022 (GPT-3 layer, s = 2048, b = 1, h = 12288, a = 96, t = 8, sequence parallel):
    // selective: s·b·h·34/t = 2048·12288·34/8 = 106,954,752 B; none: + 5·a·s²·b/t = 5·96·2048²/8 = 251,658,240 B; full: 2·s·b·h = 50,331,648 B.
    [InlineData(Recompute.Selective, 106_954_752.0)]
    [InlineData(Recompute.None, 106_954_752.0 + 251_658_240.0)]
    [InlineData(Recompute.Full, 50_331_648.0)]
    public void ActivationMemoryPerLayerMatchesKorthikanti(Recompute r, double expected)
    {
        var m = ModelCatalog.Get("gpt3-175b");
        Assert.Equal(expected, MemoryModel.ActivationBytesPerLayer(m, 2048, new ParallelLayout(Tp: 8, Recompute: r)), 3);
    }

    [Fact]
    public void PowerIsTdpPlusNodeOverheadTimesPue()
    {
        // 1024 GPUs × 700 W + 128 nodes × 4600 W = 716,800 + 588,800 = 1,305,600 W; × PUE 1.2 = 1.56672 MW.
        // 10 h: 15.6672 MWh, 10,240 GPU-hours × $2 = $20,480, energy 15,667.2 kWh × $0.08 = $1,253.376.
        var e = EnergyCostModel.Estimate(1024, 128, 700, new OperationsSpec(), 36_000);
        Assert.Equal(1.56672, e.FacilityMegawatts, 9);
        Assert.Equal(15.6672, e.EnergyMWh, 9);
        Assert.Equal(10_240, e.GpuHours, 9);
        Assert.Equal(20_480 + 1_253.376, e.TotalCostUsd, 6);
    }
}

public class StepTimeHandComputedTests
{
    [Fact]
    public void TensorParallelAllReducesOfOneSequence()
    {
        // GPT-3, TP 8 on one H100 node, one sequence of 2048, selective recompute (2 passes): 96 layers × 4 all-reduces of
        // s·h·2 B = 2048·12288·2 = 50,331,648 B. NVLink 450 GB/s × 0.8 = 360e9 B/s, 3 µs per hop:
        // 2·7/8·50,331,648/360e9 = 2.44668e-4 s + 14·3e-6 = 4.2e-5 s → 2.86668e-4 s; × 384 = 0.110080 s.
        var m = ModelCatalog.Get("gpt3-175b");
        var inputs = PlanTestData.Inputs(m, "H100-SXM", 8, new ParallelLayout(Tp: 8, Pp: 1, Dp: 1), batchSequences: 1);
        var step = StepTimeModel.Estimate(m, inputs.Run, inputs.Layout, inputs.Cluster, inputs.Overlap);
        Assert.Equal(0.110080, step.TensorParallel, 5);
        Assert.Equal(0, step.DataParallel);
        Assert.Equal(0, step.Bubble);
    }

    [Fact]
    public void HiddenCommunicationCostsTheComputeItRunsUnderItsSmShare()
    {
        // comm c under compute g, slowed by share u while c runs: it does c·(1−u) of g's work, so the pair ends at
        // max(c, g + u·c); added to g: max(c − g, u·c).
        Assert.Equal(0.15, StepTimeModel.ExposedUnder(1.0, 3.0, 0.15), 12);   // hidden: 3 + 0.15
        Assert.Equal(0.15, StepTimeModel.ExposedUnder(1.0, 0.9, 0.15), 12);   // hidden, just: 0.85 done by t = 1, 0.05 + 0.1 left
        Assert.Equal(2.0, StepTimeModel.ExposedUnder(3.0, 1.0, 0.15), 12);    // outlasts: 3 − 1
        Assert.Equal(1.0, StepTimeModel.ExposedUnder(1.0, 0, 0.15), 12);      // nothing to hide under: all exposed
        Assert.Equal(0, StepTimeModel.ExposedUnder(0, 5, 0.15), 12);
        Assert.Equal(0, StepTimeModel.ExposedUnder(1.0, 3.0, 0), 12);         // share 0: hidden is free

        // GPT-3 175B, TP 8 × DP 16 on 128 H100s, one micro-batch of 8 (DP spans nodes): the bf16 gradient all-reduce, shown
        // whole when nothing overlaps it, hides under the micro-batch's compute and then costs 0.02 of its own time.
        var m = ModelCatalog.Get("gpt3-175b");
        var inputs = PlanTestData.Inputs(m, "H100-SXM", 128, new ParallelLayout(Tp: 8, Pp: 1, Dp: 16, MicroBatch: 8, Zero: 0), batchSequences: 128);
        var step = StepTimeModel.Estimate(m, inputs.Run, inputs.Layout, inputs.Cluster, inputs.Overlap);
        double sync = StepTimeModel.Estimate(m, inputs.Run, inputs.Layout, inputs.Cluster, inputs.Overlap with { DataParallel = 0 }).DataParallel;
        Assert.InRange(sync, 0.1, step.Compute);
        Assert.Equal(0.02 * sync, step.DataParallel, 9);
        var free = StepTimeModel.Estimate(m, inputs.Run, inputs.Layout, inputs.Cluster with { InterNodeCommSmShare = 0 }, inputs.Overlap);
        Assert.Equal(step with { DataParallel = 0 }, free);
    }

    [Fact]
    public void AsyncBackwardHidesTheColumnParallelCollectivesUnderTheirGemms()
    {
        // The case above with Megatron-LM's 2022 backward overlap. With sequence parallelism each layer keeps its 2 forward
        // collectives (all-reduce equivalents, 2.86668e-4 s each) and the row-parallel linears' 2 backward all-gathers
        // (7/8·50,331,648/360e9 + 7·3e-6 = 1.43334e-4 s each); the column-parallel reduce-scatters and re-gathers run under
        // GEMMs that take longer (QKV wgrad 2·12288·4608·2048 FLOPs ≈ 0.29 ms at H100's 792 TFLOP/s): 96 × (2·2.86668e-4 +
        // 2·1.43334e-4) = 0.0825604 s, i.e. 6 of the 8 reduce-scatter-sized transfers; the 2 that hide still slow their GEMMs
        // by the NVLink SM share while they run: + 96 · 4 · 0.15 · 1.43334e-4 = 0.00825604 s → 0.0908164 s.
        var m = ModelCatalog.Get("gpt3-175b");
        var inputs = PlanTestData.Inputs(m, "H100-SXM", 8, new ParallelLayout(Tp: 8, Pp: 1, Dp: 1), batchSequences: 1);
        var async = inputs.Overlap with { TensorParallelAsyncBackward = true };
        var step = StepTimeModel.Estimate(m, inputs.Run, inputs.Layout, inputs.Cluster, async);
        Assert.Equal(0.0908164, step.TensorParallel, 5);
        var free = StepTimeModel.Estimate(m, inputs.Run, inputs.Layout, inputs.Cluster with { IntraNodeCommSmShare = 0 }, async);
        Assert.Equal(0.0825604, free.TensorParallel, 5);

        // Without sequence parallelism the row-parallel linears have no backward communication and each column-parallel
        // linear's all-reduce shows only where it outlasts its wgrad GEMM, or as the SM share it takes while hidden:
        // 96 × (2·AR + Σ max(AR − wgrad, 0.15·AR)).
        var noSp = inputs.Layout with { SequenceParallel = false };
        double ar = 2.86668e-4, exposed = 0;
        foreach (var (_, wgrad) in ComputeModel.ColumnParallelBackward(m, inputs.Run, noSp, inputs.Cluster.Gpu)) exposed += Math.Max(ar - wgrad, 0.15 * ar);
        var stepNoSp = StepTimeModel.Estimate(m, inputs.Run, noSp, inputs.Cluster, async);
        Assert.Equal(96 * (2 * ar + exposed), stepNoSp.TensorParallel, 5);
        Assert.InRange(stepNoSp.TensorParallel, 96 * 2 * ar - 1e-6, 0.110080); // between forward-only and no overlap
    }

    [Fact]
    public void ComputeTimeIsHardwareFlopsOverSustainedPeak()
    {
        // GPT-2 124M, 1 GPU, 8 sequences of 1024, no recompute: tokens 8192 × (6·N + 12·L·s·h + 6·h·V) FLOPs
        // at 989e12 × 0.62 FLOP/s. N = 12·(4·768² + 2·768·3072) = 84,934,656; 6N = 509,607,936;
        // 12·12·1024·768 = 113,246,208; 6·768·50257 = 231,584,256; sum 854,438,400 FLOPs/token;
        // × 8192 = 6.99956e12 FLOPs / 6.1318e14 = 0.0114152 s.
        var m = ModelCatalog.Get("gpt2-124m");
        var inputs = PlanTestData.Inputs(m, "H100-SXM", 1, new ParallelLayout(Tp: 1, Recompute: Recompute.None), batchSequences: 8, computeEfficiency: 0.62);
        var step = StepTimeModel.Estimate(m, inputs.Run, inputs.Layout, inputs.Cluster, inputs.Overlap);
        Assert.Equal(0.0114152, step.Compute, 6);
    }
}
