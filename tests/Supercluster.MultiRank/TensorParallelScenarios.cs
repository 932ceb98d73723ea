using Supercluster.Distributed;
using Supercluster.Model;
using Supercluster.Parallelism;
using Supercluster.Training;
using static TorchSharp.torch;

namespace Supercluster.MultiRank;

/// <summary>Tensor (and sequence) parallelism against the one-process model, on real MPI ranks.</summary>
static class TensorParallelScenarios
{
    /// <summary>
    /// Args: family (gpt2|llama) tp sequence-parallel(0|1) zero(0|1). Every rank builds the same seeded model twice: one
    /// copy takes a step alone on the global batch (the reference), the other is parallelised over the grid (TP × DP)
    /// and takes the same step on its replica's rows. Reports, per parameter, the norm of the reference gradient and of
    /// the difference from the TP gradient gathered to full size; and both losses and gradient norms.
    /// </summary>
    [Scenario("tp-step")]
    static void Step(ScenarioContext ctx)
    {
        var family = ctx.Arg(0, "gpt2") == "llama" ? ModelFamily.Llama : ModelFamily.Gpt2;
        int tp = int.Parse(ctx.Arg(1, "2"));
        bool sp = ctx.Arg(2, "0") == "1";
        int zero = int.Parse(ctx.Arg(3, "0"));
        var dims = ParallelDims.For(ctx.World.WorldSize, tp);
        using var grid = new RankGrid(ctx.World, dims);
        var config = new ModelConfig
        {
            Family = family, VocabSize = 67, SeqLen = 16, NLayer = 2, NHead = 4, NKvHead = family == ModelFamily.Llama ? 2 : 4,
            NEmbd = 32, FfnHidden = family == ModelFamily.Llama ? 48 : 128, PadVocabMultiple = Parallelize.PadVocabMultiple(1, tp),
        };
        Parallelize.Validate(config, dims, sp, 16);
        const int rows = 2, t = 16;
        int globalRows = rows * dims.Dp;
        var gen = new Random(11);
        var x = Enumerable.Range(0, globalRows * t).Select(_ => (long)gen.Next(config.VocabSize)).ToArray();
        var y = Enumerable.Range(0, globalRows * t).Select(_ => (long)gen.Next(config.VocabSize)).ToArray();
        var options = new TrainStepOptions { BatchSize = rows, SeqLen = t, GradClip = 1.0, Zero = zero };

        using var reference = CausalLM.Create(config, 5);
        using var refStep = new TrainStep(reference, new SingleProcess(), options with { BatchSize = globalRows, Zero = 0 });
        var r = refStep.Run((bx, by) => { x.CopyTo(bx, 0); y.CopyTo(by, 0); }, 1, 1e-3);

        using var model = CausalLM.Create(config, 5);
        var parallel = Parallelize.Apply(model, grid, new ParallelizeOptions(sp));
        using var step = new TrainStep(model, ctx.World, options, parallel);
        int first = grid.DpRank * rows * t;
        var p = step.Run((bx, by) => { Array.Copy(x, first, bx, 0, bx.Length); Array.Copy(y, first, by, 0, by.Length); }, 1, 1e-3);

        ctx.Report("loss", new[] { r.Loss, p.Loss });
        ctx.Report("norm", new[] { r.GradNorm, p.GradNorm });
        // Under ZeRO-1 the flat gradients are not the averaged ones (only this rank's reduce-scattered shard is): loss,
        // norm and updated weights are compared then.
        if (zero == 0) ReportGradients(ctx, refStep, step, parallel);
        // The weights after the update, too (optimizer on shards): difference of the whole model relative to its norm.
        double wd = 0, wn = 0;
        var refW = refStep.MasterWeights;
        foreach (var (name, w) in step.MasterWeights)
        {
            var full = parallel.Full(name, w);
            wd += Math.Pow((full - refW[name]).norm().item<float>(), 2);
            wn += Math.Pow(refW[name].norm().item<float>(), 2);
        }
        ctx.Report("weights_rel", Math.Sqrt(wd / wn));
    }

    static void ReportGradients(ScenarioContext ctx, TrainStep refStep, TrainStep step, ParallelModel parallel)
    {
        var refGrads = refStep.Flat.Items.ToDictionary(i => i.Name, i => refStep.Flat.Gradients.narrow(0, i.Offset, i.Length).view(i.Value.shape));
        var names = new List<string>();
        var diffs = new List<double>();
        var norms = new List<double>();
        foreach (var i in step.Flat.Items)
        {
            var full = parallel.Full(i.Name, step.Flat.Gradients.narrow(0, i.Offset, i.Length).view(i.Value.shape));
            var want = refGrads[i.Name];
            names.Add(i.Name);
            diffs.Add((full - want).norm().item<float>());
            norms.Add(want.norm().item<float>());
        }
        ctx.Report("names", names);
        ctx.Report("diff", diffs);
        ctx.Report("ref", norms);
    }
}
