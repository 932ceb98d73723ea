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
    /// Args: families (gpt2,llama), pp, micro-batches per data-parallel rank, n_layer, interleave (chunks per rank). Every rank builds the same seeded model;
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
        int pp = int.Parse(ctx.Arg(1, "2")), m = int.Parse(ctx.Arg(2, "4")), nLayer = int.Parse(ctx.Arg(3, "4")), v = int.Parse(ctx.Arg(4, "1"));
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
        var stages = PipelineStage.ForRank(model, grid.Pp, null, v);
        using (var step = new TrainStep(model, grid.DpCp, options, stages: stages))
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

    /// <summary>
    /// Args: families (gpt2,llama), tp, pp, micro-batches per data-parallel rank, sequence-parallel (0|1), cp, interleave. Pipeline
    /// stages that are tensor and/or context parallel (grid TP × CP × DP × PP): every rank builds the same seeded model, parallelises it over TP and
    /// keeps its stage, and takes one 1F1B step; every rank also takes the step on the whole model alone over the global
    /// batch. Reports per parameter of its stage the norm of the reference gradient and of the difference from the TP
    /// gradient gathered to full size, both losses and norms, and the updated weights' relative difference.
    /// </summary>
    [Scenario("tp-pp-step")]
    static void TensorParallelStages(ScenarioContext ctx)
    {
        int tp = int.Parse(ctx.Arg(1, "2")), pp = int.Parse(ctx.Arg(2, "2")), m = int.Parse(ctx.Arg(3, "4"));
        bool sp = ctx.Arg(4, "0") == "1";
        int cp = int.Parse(ctx.Arg(5, "1")), v = int.Parse(ctx.Arg(6, "1"));
        foreach (var familyName in ctx.Arg(0, "gpt2").Split(','))
        {
            void Report(string key, object value) => ctx.Report(familyName + "/" + key, value);
            var family = familyName == "llama" ? ModelFamily.Llama : ModelFamily.Gpt2;
            var config = (family == ModelFamily.Gpt2 ? ModelPresets.Get("tiny") : ModelPresets.Get("llama-tiny"))
                with { VocabSize = Vocab, NLayer = 4, SeqLen = SeqLen, PadVocabMultiple = Parallelize.PadVocabMultiple(1, tp) };
            var dims = ParallelDims.For(ctx.World.WorldSize, tp, cp, pp);
            Parallelize.Validate(config, dims, sp, SeqLen);
            var options = new TrainStepOptions { BatchSize = Batch, SeqLen = SeqLen, GradClip = 1.0 };
            const double lr = 1e-2;
            static void Fill(long[] x, long[] y, int r, int i)
            {
                var rng = new Random(1000 * r + i);
                for (int k = 0; k < x.Length; k++) { x[k] = rng.Next(Vocab); y[k] = rng.Next(Vocab); }
            }

            using var whole = CausalLM.Create(config, seed: 5);
            whole.train();
            using var single = new SingleProcess();
            using var reference = new TrainStep(whole, single, options);
            int k = 0;
            var r0 = reference.Run((x, y) => { Fill(x, y, k / m, k % m); k++; }, m * dims.Dp, lr);

            using var grid = new RankGrid(ctx.World, dims);
            using var model = CausalLM.Create(config, seed: 5);
            model.train();
            var parallel = Parallelize.Apply(model, grid, new ParallelizeOptions(sp));
            var stages = PipelineStage.ForRank(model, grid.Pp, parallel, v);
            var stage = stages[0];
            using var step = new TrainStep(model, ctx.World, options, parallel, stages);
            int micro = 0;
            var result = step.Run((x, y) => Fill(x, y, grid.DpRank, micro++), m, lr);
            Report("loss", new[] { r0.Loss, result.Loss });
            Report("norm", new[] { r0.GradNorm, result.GradNorm });

            var refGrads = reference.Flat.Items.ToDictionary(i => i.Name, i => reference.Flat.Gradients.narrow(0, i.Offset, i.Length).view(i.Value.shape));
            var refWeights = reference.MasterWeights;
            var names = new List<string>();
            var diffs = new List<double>();
            var norms = new List<double>();
            double wd = 0, wn = 0;
            foreach (var i in step.Flat.Items)
            {
                var full = parallel.Full(i.Name, step.Flat.Gradients.narrow(0, i.Offset, i.Length).view(i.Value.shape));
                names.Add(i.Name);
                diffs.Add((full - refGrads[i.Name]).norm().item<float>());
                norms.Add(refGrads[i.Name].norm().item<float>());
                var w = parallel.Full(i.Name, i.Value);
                wd += Math.Pow((w - refWeights[i.Name]).norm().item<float>(), 2);
                wn += Math.Pow(refWeights[i.Name].norm().item<float>(), 2);
            }
            Report("names", names);
            Report("diff", diffs);
            Report("ref", norms);
            Report("weights_rel", Math.Sqrt(wd / wn));
            if (stage.HoldsTied) Report("tied", ScenarioContext.Values(parallel.Full(stage.Tied!, step.Flat.Items.First(i => i.Name == stage.Tied).Value)));
        }
    }
}
