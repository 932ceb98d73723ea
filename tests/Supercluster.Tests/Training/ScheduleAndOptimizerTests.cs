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
    public void AdamW_matches_a_hand_computed_update_and_decays_only_where_the_mask_says()
    {
        var param = tensor(new float[] { 1f, -2f, 3f, 0.5f, 0.1f, 0.2f });
        var mask = tensor(new float[] { 1, 1, 1, 1, 0, 0 });              // a 2×2 matrix, then a bias
        using var opt = new AdamW(mask, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1);
        opt.Step(param, tensor(new float[] { 0.5f, -1f, 0f, 2f, 1f, -1f }), lr: 0.01);
        // Step 1: m̂ = g, v̂ = g², update = lr·g/(|g|+eps) = ±lr (0 where g = 0); decay multiplies by (1 − lr·wd) first.
        float[] expect = [1f * 0.999f - 0.01f, -2f * 0.999f + 0.01f, 3f * 0.999f, 0.5f * 0.999f - 0.01f, 0.1f - 0.01f, 0.2f + 0.01f];
        Assert.Equal(expect, param.data<float>().ToArray(), (x, y) => Math.Abs(x - y) < 1e-6);
        Assert.Equal(1, opt.StepCount);

        // Step 2 by hand for element 0 (g = 0.5 twice): m₂ = 0.9·0.05 + 0.1·0.5, v₂ = 0.95·0.0125 + 0.05·0.25.
        float before = param[0].item<float>();
        opt.Step(param, tensor(new float[] { 0.5f, -1f, 0f, 2f, 1f, -1f }), lr: 0.01);
        double m = 0.9 * 0.05 + 0.1 * 0.5, v = 0.95 * 0.0125 + 0.05 * 0.25, mhat = m / (1 - 0.81), vhat = v / (1 - 0.9025);
        double expected0 = before * (1 - 0.001) - 0.01 * mhat / (Math.Sqrt(vhat) + 1e-8);
        Assert.Equal(expected0, param[0].item<float>(), 5);
    }
}
