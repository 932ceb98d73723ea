using Supercluster.Distributed;
using Supercluster.Model;
using Supercluster.Parallelism;
using Supercluster.Training;
using static TorchSharp.torch;

namespace Supercluster.MultiRank;

/// <summary>Pipeline parallelism on real MPI ranks: one 1F1B training step against the same step on one process.</summary>
static class PipelineScenarios
{
    const int Batch = 2, SeqLen = 16, Vocab = 67;

    /// <summary>
    /// Args: families (gpt2,llama), pp, micro-batches per data-parallel rank, n_layer. Every rank builds the same seeded model;
    /// the grid is PP × DP (DP = world ÷ pp). Each rank takes one step with its stage and reports its stage's gradients
    /// (fp32, after the tied-table sum and DP averaging), the loss, the norm and its updated weights, by parameter name.
    /// Rank 0 also takes the same step on the whole model in-process over the global batch (m·DP micro-batches) and
    /// reports it under "ref.". Keys start with the family ("gpt2/grad.wte.weight").
    /// </summary>
    [Scenario("pipeline-step")]
    static void Steps(ScenarioContext ctx)
    {
        foreach (var family in ctx.Arg(0, "gpt2").Split(',')) Step(ctx, family);
    }

    static void Step(ScenarioContext ctx, string familyName)
    {
        var family = familyName == "llama" ? ModelFamily.Llama : ModelFamily.Gpt2;
        void Report(string key, object value) => ctx.Report(familyName + "/" + key, value);
        int pp = int.Parse(ctx.Arg(1, "2")), m = int.Parse(ctx.Arg(2, "4")), nLayer = int.Parse(ctx.Arg(3, "4"));
        var config = (family == ModelFamily.Gpt2 ? ModelPresets.Get("tiny") : ModelPresets.Get("llama-tiny")) with { VocabSize = Vocab, NLayer = nLayer, SeqLen = SeqLen };
        var options = new TrainStepOptions { BatchSize = Batch, SeqLen = SeqLen, GradClip = 1.0 };
        const double lr = 1e-2;

        // Micro-batch i of data-parallel rank r: seeded ids, the same on every rank and in the reference.
        static void Fill(long[] x, long[] y, int r, int i)
        {
            var rng = new Random(1000 * r + i);
            for (int k = 0; k < x.Length; k++) { x[k] = rng.Next(Vocab); y[k] = rng.Next(Vocab); }
        }

        var dims = ParallelDims.For(ctx.World.WorldSize, pp: pp);
        using var grid = new RankGrid(ctx.World, dims);
        using var model = CausalLM.Create(config, seed: 5);
        model.train();
        var stage = new PipelineStage(model, grid.Pp);
        using (var step = new TrainStep(model, grid.DpCp, options, stage: stage))
        {
            int micro = 0;
            var result = step.Run((x, y) => Fill(x, y, grid.DpRank, micro++), m, lr);
            Report("loss", result.Loss);
            Report("norm", result.GradNorm);
            Report("names", step.Flat.Items.Select(i => i.Name).ToArray());
            foreach (var item in step.Flat.Items)
            {
                Report("grad." + item.Name, ScenarioContext.Values(step.Flat.Gradients.narrow(0, item.Offset, item.Length)));
                Report("weight." + item.Name, ScenarioContext.Values(item.Value));
            }
        }
        if (ctx.World.Rank != 0) return;

        using var whole = CausalLM.Create(config, seed: 5);
        whole.train();
        using var single = new SingleProcess();
        using var reference = new TrainStep(whole, single, options);
        int k = 0;
        var r0 = reference.Run((x, y) => { Fill(x, y, k / m, k % m); k++; }, m * dims.Dp, lr);
        Report("ref.loss", r0.Loss);
        Report("ref.norm", r0.GradNorm);
        foreach (var item in reference.Flat.Items)
        {
            Report("ref.grad." + item.Name, ScenarioContext.Values(reference.Flat.Gradients.narrow(0, item.Offset, item.Length)));
            Report("ref.weight." + item.Name, ScenarioContext.Values(item.Value));
        }
    }
}
