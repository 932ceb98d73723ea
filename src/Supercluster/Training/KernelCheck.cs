using System.Diagnostics;
using TorchSharp;
using static TorchSharp.torch;

namespace Supercluster.Training;

/// <summary>
/// llm.c's habit for custom kernels, runnable from a published bundle on a GPU node (no SDK, no test runner there):
/// the fused AdamW kernel and the torch-ops AdamW, each against a float64 reference on fresh random inputs
/// (‖out − ref‖ / ‖ref‖), then both timed at a realistic size. <c>bench --check-kernels</c> prints it.
/// </summary>
public static class KernelCheck
{
    public sealed record AdamWResult(long CheckedElements, int Steps, double FusedRelError, double TorchRelError,
        long TimedElements, double FusedMs, double TorchMs, string Implementation)
    {
        /// <summary>fp32 arithmetic on these sizes lands near 1e-7; anything above 1e-5 is a wrong kernel, not rounding.</summary>
        public bool Passed => FusedRelError < 1e-5 && TorchRelError < 1e-5;
        /// <summary>Bytes one step must move at the fused kernel's floor: p, g, m, v read, p, m, v written (fp32), mask byte read.</summary>
        public double FusedBandwidthGBs => TimedElements * 29.0 / (FusedMs / 1000) / 1e9;
    }

    public static AdamWResult AdamW(Device device, long checkedElements = 4_000_037, long timedElements = 124_475_904, int steps = 4, int timedSteps = 20)
    {
        if (device.type != DeviceType.CUDA) throw new BadInputException("--check-kernels needs --device cuda (the kernels are CUDA kernels)");
        const double lr = 1e-3, wd = 0.1, b1 = 0.9, b2 = 0.95, eps = 1e-8;
        using var scope = NewDisposeScope();
        var gen = new Generator(20261123);
        var p0 = randn(checkedElements, generator: gen);
        var mask = (rand(checkedElements, generator: gen) > 0.25).to(ScalarType.Float32);
        var grads = Enumerable.Range(0, steps).Select(_ => randn(checkedElements, generator: gen).mul_(0.01)).ToList();
        var scale = 0.7f;

        // float64 reference: torch.optim.AdamW's formulas, written out.
        var pRef = p0.to(ScalarType.Float64);
        var mRef = zeros_like(pRef);
        var vRef = zeros_like(pRef);
        var maskRef = mask.to(ScalarType.Float64);
        for (int t = 1; t <= steps; t++)
        {
            var g = grads[t - 1].to(ScalarType.Float64) * scale;
            pRef = pRef * (1 - maskRef * (lr * wd));
            mRef = mRef * b1 + g * (1 - b1);
            vRef = vRef * b2 + g * g * (1 - b2);
            var denom = (vRef / (1 - Math.Pow(b2, t))).sqrt() + eps;
            pRef = pRef - (mRef / (1 - Math.Pow(b1, t))) / denom * lr;
        }

        double RelError(string implementation, out string description)
        {
            using var inner = NewDisposeScope();
            var p = p0.to(device);                                                     // an element the kernel skips keeps p0: caught below
            using var opt = new AdamW(mask.to(device), b1, b2, eps, wd, implementation);
            description = opt.Implementation;
            var s = tensor(new[] { scale }, device: device);
            foreach (var g in grads) opt.Step(p, g.to(device).clone(), lr, s);
            var diff = p.cpu().to(ScalarType.Float64) - pRef;
            return diff.norm().item<double>() / pRef.norm().item<double>();            // NaN left anywhere → NaN → fails
        }

        double fusedErr = RelError("fused", out string fusedDescription);
        double torchErr = RelError("torch", out _);

        double Time(string implementation)
        {
            using var inner = NewDisposeScope();
            var p = randn(timedElements, device: device);
            var g = randn(timedElements, device: device).mul_(0.01);
            var m = ones(timedElements, device: device);
            using var opt = new AdamW(m, b1, b2, eps, wd, implementation);
            var s = tensor(new[] { scale }, device: device);
            for (int i = 0; i < 3; i++) opt.Step(p, g, lr, s);                         // warm-up
            var times = new List<double>();
            for (int i = 0; i < timedSteps; i++)
            {
                cuda.synchronize();
                var c = Stopwatch.StartNew();
                opt.Step(p, g, lr, s);
                cuda.synchronize();
                times.Add(c.Elapsed.TotalMilliseconds);
            }
            return times.Order().ElementAt(times.Count / 2);
        }

        return new AdamWResult(checkedElements, steps, fusedErr, torchErr, timedElements, Time("fused"), Time("torch"), fusedDescription);
    }
}
