using Supercluster.Distributed;
using Supercluster.Model;
using Supercluster.Planning;
using Supercluster.Training;

namespace Supercluster.Tests.Planning;

/// <summary>
/// <c>plan --device cpu --calibrate</c>: the measurements are sane, and the predicted step of the engine lands within a wide band
/// of the engine's measured step (a factor of 5 either way: shared CI machines are noisy; bench/plan-vs-train.sh reports the
/// real error on a quiet machine).
/// </summary>
public class CpuCalibrationTests
{
    public CpuCalibrationTests() => TorchSetup.Init();

    static readonly ModelConfig Tiny = ModelPresets.Get("tiny");
    const int Batch = 2, Seq = 32;
    // measured once for both tests (a few seconds on 2 idle cores)
    static readonly Lazy<CpuMeasurements> Measured = new(() => CpuCalibration.Measure(Tiny, Batch, Seq, new SingleProcess()));

    [Fact]
    public void MeasurementsArePositiveAndCoverEveryGemm()
    {
        var me = Measured.Value;
        // qkv, attn-out, fc, mlp-out, head — each forward, dgrad, wgrad
        Assert.Equal(15, me.Gemms.Count);
        Assert.All(me.Gemms, g => Assert.True(g.Seconds > 0 && double.IsFinite(g.Gflops) && g.Gflops > 0, g.Name));
        Assert.Contains(me.Gemms, g => g is { Name: "head wgrad", M: 50257, N: 64, K: 64 });
        foreach (var v in new[] { me.AttentionSeconds, me.StreamBytesPerSecond, me.OpSeconds, me.HiddenOpSeconds, me.FfnOpSeconds, me.VocabOpSeconds, me.ParamOpSeconds })
            Assert.True(v > 0 && double.IsFinite(v));
        Assert.Equal(0, me.AllReduceBytesPerSecond); // one process: nothing to measure
        var p = CpuCalibration.Predict(Tiny, Batch, Seq, accumulation: 3, zero: 0, me);
        Assert.Equal(3, p.MicroBatches);
        Assert.Equal(0, p.Communication);
        Assert.True(p.Matmuls > 0 && p.Attention > 0 && p.MemoryBound > 0 && p.Optimizer > 0);
        Assert.Equal(p.Matmuls + p.Attention + p.MemoryBound + p.Dispatch + p.Optimizer, p.Step, 12);
    }

    [Fact]
    public void ParameterCountMatchesTheEngine()
    {
        using var model = CausalLM.Create(Tiny, 1);
        Assert.Equal(model.parameters().Sum(p => p.numel()), CpuCalibration.ParameterCount(Tiny));
        var llama = ModelPresets.Get("llama-tiny");
        using var lm = CausalLM.Create(llama, 1);
        Assert.Equal(lm.parameters().Sum(p => p.numel()), CpuCalibration.ParameterCount(llama));
    }

    [Fact]
    public void PredictionIsWithinAWideBandOfTheMeasuredEngineStep()
    {
        var predicted = CpuCalibration.Predict(Tiny, Batch, Seq, 1, 0, Measured.Value).Step;
        var r = Benchmark.Run(new BenchOptions { Model = "tiny", BatchSize = Batch, SeqLen = Seq, Dtype = "fp32", Device = "cpu", Steps = 8, WarmupSteps = 2, Optimizer = "torch" }, TextWriter.Null);
        Assert.InRange(predicted / (r.MsPerStep / 1e3), 0.2, 5.0);
    }
}
