using Supercluster.Distributed;
using Supercluster.Model;
using Supercluster.Runtime;
using Supercluster.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Supercluster.Tests.Distributed;

public class FlatParametersTests
{
    public FlatParametersTests() => TorchSetup.Init();

    [Fact]
    public void Parameters_and_gradients_are_views_of_two_flat_buffers_that_autograd_fills_in_place()
    {
        using var model = CausalLM.Create(TorchSetup.TinyGpt2(), seed: 1);
        var before = model.parameters().Select(p => p.detach().clone()).ToList();
        using var flat = new FlatParameters(model.named_parameters().Select(p => (p.name, p.parameter)), worldSize: 3);
        Assert.Equal(model.parameters().Sum(p => p.numel()), flat.Count);
        Assert.Equal(0, flat.PaddedCount % 3);
        foreach (var (p, b) in model.parameters().Zip(before)) Assert.True(p.eq(b).all().item<bool>()); // values kept

        // Writing the flat buffer changes the model: the parameters live inside it.
        using (no_grad()) flat.Values.narrow(0, 0, 5).fill_(7);
        Assert.Equal(7f, model.parameters().First().reshape(-1)[0].item<float>());

        var idx = randint(0, 11, [2, 9], generator: new Generator(3));
        for (int i = 0; i < 2; i++) // twice: the second backward accumulates into the same views
            nn.functional.cross_entropy(model.forward(idx[.., ..^1]).view(-1, 11), idx[.., 1..].reshape(-1)).backward();
        long offset = 0;
        foreach (var p in model.parameters())
        {
            Assert.Equal(LibTorchLoader.DataPtr(flat.Gradients.narrow(0, offset, p.numel())), LibTorchLoader.DataPtr(p.grad!));
            offset += p.numel();
        }
        Assert.True(flat.Gradients.abs().sum().item<float>() > 0);
        Assert.Equal(0f, flat.Gradients.narrow(0, flat.Count, flat.PaddedCount - flat.Count).abs().sum().item<float>());
    }

    [Theory]
    [InlineData(0.05)]   // clipped: the norm is far above
    [InlineData(1e6)]    // not clipped
    public void Step_clips_by_the_global_norm_on_the_device_as_clip_grad_norm_does(double clip)
    {
        using var model = CausalLM.Create(TorchSetup.TinyGpt2(), seed: 2);
        using var step = new TrainStep(model, new SingleProcess(), new TrainStepOptions { BatchSize = 2, SeqLen = 8, WeightDecay = 0.1, GradClip = clip });
        var idx = randint(0, 11, [2, 9], generator: new Generator(4));
        step.Flat.ZeroGradients();
        nn.functional.cross_entropy(model.forward(idx[.., ..^1]).view(-1, 11), idx[.., 1..].reshape(-1)).backward();

        // The expected update, computed separately: g·min(1, clip/(‖g‖+1e-6)) fed to a fresh AdamW on copies.
        var g = cat(model.parameters().Select(p => p.grad!.reshape(-1)).ToList());
        double norm = Math.Sqrt(g.to(ScalarType.Float64).square().sum().item<double>());
        var p0 = cat(model.parameters().Select(p => p.detach().reshape(-1)).ToList());
        using (var mask = cat(model.named_parameters().Select(p => full(p.parameter.numel(), p.parameter.dim() >= 2 ? 1f : 0f)).ToList()))
        using (var reference = new AdamW(mask, weightDecay: 0.1))
            reference.Step(p0, g * Math.Min(1, clip / (norm + 1e-6)), lr: 1e-2);

        // The step's own sequence after the backward: averaged gradient and norm, clip factor, optimizer.
        var (grad, reported) = step.DataParallel.ReduceGradients();
        step.Optimizer.Step(grad, 1e-2, TrainStep.ClipScale(reported, clip));
        Assert.Equal(norm, reported.item<double>(), 5);
        var after = cat(model.parameters().Select(p => p.detach().reshape(-1)).ToList());
        Assert.True(after.allclose(p0, rtol: 1e-5, atol: 1e-7), $"max difference {(after - p0).abs().max().item<float>()}");
    }
}
