using Supercluster.Model;
using Supercluster.Parallelism;
using TorchSharp;
using static TorchSharp.torch;

namespace Supercluster.MultiRank;

/// <summary>Context parallelism against one process: same model, same batch, loss and every gradient.</summary>
static class ContextParallelScenarios
{
    /// <summary>Args: family (gpt2|llama). Reports the CP loss and reference loss, and per-parameter gradient differences.</summary>
    [Scenario("cp")]
    static void ContextParallelMatchesOneProcess(ScenarioContext ctx)
    {
        var cp = ctx.World;
        var family = ctx.Arg(0, "gpt2") == "llama" ? ModelFamily.Llama : ModelFamily.Gpt2;
        var config = new ModelConfig
        {
            Family = family, VocabSize = 37, SeqLen = 16, NLayer = 2, NHead = 4, NKvHead = family == ModelFamily.Llama ? 2 : 4, NEmbd = 16, FfnHidden = 32,
        };
        const int B = 3, T = 16;
        var gen = new Random(11);
        long[] x = [.. Enumerable.Range(0, B * T).Select(_ => (long)gen.Next(config.VocabSize))];
        long[] y = [.. Enumerable.Range(0, B * T).Select(_ => (long)gen.Next(config.VocabSize))];

        using var reference = CausalLM.Create(config, seed: 5);
        var refLoss = nn.functional.cross_entropy(reference.forward(tensor(x, [B, T])).view(-1, config.VocabSize), tensor(y));
        refLoss.backward();

        using var model = CausalLM.Create(config, seed: 5);
        using var context = new ContextParallel(cp, T, CPU);
        long tLocal = T / cp.WorldSize;
        var xl = tensor(ContextParallel.LocalTokens(x, B, T, cp.Rank, cp.WorldSize), [B, tLocal]);
        var yl = tensor(ContextParallel.LocalTokens(y, B, T, cp.Rank, cp.WorldSize));
        var loss = nn.functional.cross_entropy(model.Forward(xl, context).view(-1, config.VocabSize), yl);
        loss.backward();
        // The mean over CP ranks of local means is the sequence mean (equal token counts); so is the gradient average.
        var meanLoss = Region.AllReduce(loss.detach().reshape(1), cp) / cp.WorldSize;
        ctx.Report("loss", new[] { meanLoss.item<float>(), refLoss.item<float>() });

        var refGrads = reference.named_parameters().ToDictionary(p => p.name, p => p.parameter.grad!);
        double worst = 0;
        string worstName = "";
        foreach (var (name, p) in model.named_parameters())
        {
            var g = Region.AllReduce(p.grad!, cp) / cp.WorldSize;
            var r = refGrads[name];
            double rel = (g - r).abs().max().item<float>() / Math.Max(1e-12, r.abs().max().item<float>());
            if (rel > worst) (worst, worstName) = (rel, name);
        }
        ctx.Report("worst_grad_rel", worst);
        ctx.Report("worst_grad_name", worstName);
        ctx.Report("params", model.named_parameters().Count());
    }
}
