using Supercluster.Planning;

namespace Supercluster.Tests.Planning;

/// <summary>The pipeline schedules as their engines run them (PipelineSchedule.cs), hand-computed and against a step-by-step
/// replay of DeepSpeed's TrainSchedule.</summary>
public class PipelineScheduleTests
{
    [Fact]
    public void HandComputedSchedules()
    {
        // F = 1, B = 3 (full recomputation), m = 4, p = 2: (m + p − 1)·(F + B) = 5·4 = 20; interleaved v = 2:
        // (m + (p − 1)/v)·(F + B) = 4.5·4 = 18; no pipeline: m·(F + B) = 16.
        Assert.Equal(20, PipelineSchedule.Seconds(1, 3, 4, 2), 12);
        Assert.Equal(18, PipelineSchedule.Seconds(1, 3, 4, 2, interleave: 2), 12);
        Assert.Equal(16, PipelineSchedule.Seconds(1, 3, 4, 1), 12);
        // Transfers per stage: Megatron 2·(v·m + p − 1) = 10 (send and receive at once); DeepSpeed 4·(m + p − 1) = 20.
        Assert.Equal(10, PipelineSchedule.Transfers(PipelineEngine.Megatron, 4, 2));
        Assert.Equal(20, PipelineSchedule.Transfers(PipelineEngine.DeepSpeed, 4, 2));
    }

    [Fact]
    public void DeepSpeedEngineSendsTwiceAsOftenInTheSameScheduleTime()
    {
        // TP = 1 (no all-gather after the receive), 4 stages, 12 micro-batches: DeepSpeed's 4·(m + p − 1) sequential transfers
        // are twice Megatron's 2·(m + p − 1) batched ones; compute and bubble are the same.
        var m = ModelCatalog.Get("gpt2-124m");
        var inputs = PlanTestData.Inputs(m, "H100-SXM", 4, new ParallelLayout(Tp: 1, Pp: 4, Dp: 1), batchSequences: 12);
        var megatron = StepTimeModel.Estimate(m, inputs.Run, inputs.Layout, inputs.Cluster, inputs.Overlap);
        var deepspeed = StepTimeModel.Estimate(m, inputs.Run with { Pipeline = PipelineEngine.DeepSpeed }, inputs.Layout, inputs.Cluster, inputs.Overlap);
        Assert.True(megatron.PipelineP2P > 0);
        Assert.Equal(2 * megatron.PipelineP2P, deepspeed.PipelineP2P, 12);
        Assert.Equal(megatron.Compute, deepspeed.Compute, 12);
        Assert.Equal(megatron.Bubble, deepspeed.Bubble, 12);
    }

    [Theory]
    [InlineData(8, 4, 1.0, 3.0)]
    [InlineData(16, 5, 1.0, 2.0)]
    [InlineData(12, 3, 2.0, 1.0)]
    [InlineData(240, 35, 1.0, 3.0)] // MT-NLG's 280-node layout
    public void DeepSpeedTrainScheduleTakesAsLongAs1F1B(int m, int p, double f, double b)
    {
        // DeepSpeed's blocking per-step exchanges look like lock-step (2·max(F, B) per micro-batch), but a replay shows
        // the stages stagger and the schedule takes exactly the 1F1B time: the closed form is exact, to rounding.
        Assert.Equal(PipelineSchedule.Seconds(f, b, m, p), ReplayDeepSpeed(m, p, f, b), 9);
        Assert.True(ReplayDeepSpeed(m, p, f, b) < (2.0 * m + p - 2) * Math.Max(f, b) + p * f - 1e-9 || f == b);
    }

    /// <summary>
    /// DeepSpeed's TrainSchedule (deepspeed/runtime/pipe/schedule.py) replayed step by step: stage s runs a forward on step k when
    /// k and s have the same parity, else a backward, of the micro-batch its _step_to_micro_batch gives; a forward step sends the
    /// previous gradient to and receives an activation from stage s − 1, a backward step receives a gradient from and sends the
    /// previous activation to stage s + 1. Sends and receives block until the partner reaches them, so a step starts when both
    /// partners have finished their previous step.
    /// </summary>
    static double ReplayDeepSpeed(int m, int p, double f, double b)
    {
        int steps = 2 * (m + p - 1);
        var end = new double[p];
        var prevMb = Enumerable.Repeat(-1, p).ToArray();
        for (int k = 0; k < steps; k++)
        {
            var ops = new (int Mb, bool Fwd, int Partner)[p];
            for (int s = 0; s < p; s++)
            {
                bool fwd = (k % 2 == 0) == (s % 2 == 0);
                int mb = fwd
                    ? (k % 2 == 0 ? k / 2 - s / 2 : (k - 1) / 2 - s / 2)
                    : (k % 2 == 0 ? k / 2 - p + (s + 1) / 2 : (k - 1) / 2 - p + 1 + s / 2);
                bool valid = mb >= 0 && mb < m, prevValid = prevMb[s] >= 0 && prevMb[s] < m;
                int partner = fwd ? s - 1 : s + 1;
                bool exchanges = partner >= 0 && partner < p && (valid || prevValid);
                ops[s] = (valid ? mb : -1, fwd, exchanges ? partner : -1);
                prevMb[s] = mb;
            }
            var start = new double[p];
            for (int s = 0; s < p; s++)
                start[s] = ops[s].Partner >= 0 ? Math.Max(end[s], end[ops[s].Partner]) : end[s];
            for (int s = 0; s < p; s++)
                end[s] = start[s] + (ops[s].Mb < 0 ? 0 : ops[s].Fwd ? f : b);
        }
        return end.Max();
    }
}
