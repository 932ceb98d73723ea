using Supercluster.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Supercluster.Tests.Training;

public class ScheduleAndOptimizerTests
{
    public ScheduleAndOptimizerTests() => TorchSetup.Init();

    [Fact]
    public void Schedule_warms_up_linearly_then_decays_by_cosine_to_the_floor()
    {
        var s = new LrSchedule(Peak: 1.0, WarmupSteps: 10, TotalSteps: 110, MinRatio: 0.1);
        Assert.Equal(0.1, s.At(0), 12);
        Assert.Equal(0.5, s.At(4), 12);
        Assert.Equal(1.0, s.At(10), 12);
        Assert.Equal(0.1 + 0.45 * (1 + Math.Cos(Math.PI * 50 / 99.0)), s.At(60), 12);
        Assert.Equal(0.1, s.At(109), 12);
    }

    [Fact]
    public void AdamW_matches_a_hand_computed_update_and_decays_only_matrices()
    {
        var w = new TorchSharp.Modules.Parameter(tensor(new float[] { 1f, -2f, 3f, 0.5f }).view(2, 2));
        var b = new TorchSharp.Modules.Parameter(tensor(new float[] { 0.1f, 0.2f }));
        using var opt = new AdamW([("w", w), ("b", b)], beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1);
        w.grad = tensor(new float[] { 0.5f, -1f, 0f, 2f }).view(2, 2);
        b.grad = tensor(new float[] { 1f, -1f });
        opt.Step(lr: 0.01);
        // Step 1: m̂ = g, v̂ = g², update = lr·g/(|g|+eps) = ±lr (0 where g = 0); decay multiplies w by (1 − lr·wd) first.
        float[] expectW = [1f * 0.999f - 0.01f, -2f * 0.999f + 0.01f, 3f * 0.999f, 0.5f * 0.999f - 0.01f];
        float[] expectB = [0.1f - 0.01f, 0.2f + 0.01f];
        Assert.Equal(expectW, w.data<float>().ToArray(), (x, y) => Math.Abs(x - y) < 1e-6);
        Assert.Equal(expectB, b.data<float>().ToArray(), (x, y) => Math.Abs(x - y) < 1e-6);
        Assert.Equal(1, opt.StepCount);
    }
}
