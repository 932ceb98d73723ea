using System.CommandLine;
using Supercluster.Cli;
using Supercluster.Cli.Commands;

namespace Supercluster.Tests.Planning;

/// <summary>Runs <c>plan</c> in-process through the same entry point as Program.cs and checks exit codes and messages.</summary>
[Collection("Console")]
public class PlanCliTests
{
    static (int Code, string Out, string Err) Run(params string[] args) =>
        InProcessCli.Run([PlanCommand.Create()], ["plan", .. args]);

    [Theory]
    [InlineData("--gpus 0", "--gpus 0")]
    [InlineData("--gpus -8", "--gpus -8")]
    [InlineData("--layers 0", "--layers 0")]
    [InlineData("--hidden -4", "--hidden -4")]
    [InlineData("--tokens 0", "--tokens 0")]
    [InlineData("--tp 5 --gpus 5", "--tp 5 does not divide the model's 96 attention heads")]
    [InlineData("--tp 8 --pp 7 --gpus 56", "--pp 7 does not divide the model's 96 layers")]
    [InlineData("--gpu X100", "--gpu 'X100' is unknown")]
    [InlineData("--tp 8 --gpus 24", "not divisible by DP 3")]
    [InlineData("--batch-tokens 1000", "--batch-tokens 1000 is not divisible by --seq 2048")]
    [InlineData("--gpus 1000 --tp 8 --pp 2", "--gpus 1000 is not divisible by TP·PP·CP")]
    [InlineData("--gpu V100 --gpus 8", "--precision bf16 is not supported by V100")]
    [InlineData("--model gpt5", "--model 'gpt5' is unknown")]
    [InlineData("--recompute some", "--recompute 'some' is unknown")]
    [InlineData("--zero 4", "--zero 4 must be 0, 1, 2 or 3")]
    [InlineData("--sweep gpus=100..10", "--sweep 'gpus=100..10' is not a range")]
    [InlineData("--ep 3 --model grok1-314b --gpus 8", "--ep 3 does not divide the model's 8 experts")]
    [InlineData("--compute-efficiency 1.5", "--compute-efficiency 1.5 must be a fraction")]
    [InlineData("--attention sparse", "--attention 'sparse' is unknown")]
    [InlineData("--pipeline-engine gpipe", "--pipeline-engine 'gpipe' is unknown")]
    [InlineData("--device tpu", "--device 'tpu' is unknown")]
    [InlineData("--device cpu", "--device cpu plans our own engine: add --calibrate")]
    [InlineData("--calibrate", "--calibrate measures this machine: add --device cpu")]
    [InlineData("--model llama3-405b --tp 8 --pp 16 --gpus 128", "--pp 16 does not divide the model's 126 layers")]
    [InlineData("--model llama3-405b --tp 8 --pp 6 --gpus 48 --pp-uneven-ends", "--pp-uneven-ends: --pp 6 does not divide the model's 126 layers + 2")]
    [InlineData("--userbuffers 24", "--userbuffers '24' is not PROJ,FC2[,aggregate]")]
    [InlineData("--userbuffers 24,x", "--userbuffers '24,x' is not PROJ,FC2[,aggregate]")]
    [InlineData("--userbuffers 24,-1", "--userbuffers '24,-1' is not PROJ,FC2[,aggregate]")]
    [InlineData("--tp 1 --gpus 8 --userbuffers 24,16", "--userbuffers needs --tp ≥ 2 with sequence parallelism")]
    [InlineData("--no-sequence-parallel --userbuffers 24,16", "--userbuffers needs --tp ≥ 2 with sequence parallelism")]
    public void BadInputGivesOneLineAndExit2(string args, string expected)
    {
        var (code, _, err) = Run(args.Split(' '));
        Assert.Equal(2, code);
        var lines = err.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Single(lines);
        Assert.StartsWith("error: ", lines[0]);
        Assert.Contains(expected, lines[0]);
    }

    [Fact]
    public void CalibrationPrintsEveryPublishedRunAndTheMeanError()
    {
        var (code, output, _) = Run("--calibration");
        Assert.Equal(0, code);
        foreach (var r in Supercluster.Planning.PublishedRuns.All) Assert.Contains(r.Name, output);
        Assert.Contains("mean absolute error", output);
    }

    [Fact]
    public void BreakdownSplitsEveryRowsStepAndNeedsCalibration()
    {
        var (code, output, _) = Run("--calibration", "--breakdown");
        Assert.Equal(0, code);
        Assert.Contains("TP raw", output);
        // Every row's shares cover its step: compute (GEMM + attention + memory-bound) plus bubble, exposed collectives, optimizer.
        foreach (var r in Supercluster.Planning.PublishedRuns.All)
        {
            var b = Supercluster.Planning.CalibrationTable.BreakdownOf(r);
            Assert.Equal(1, b.Gemm + b.Attention + b.MemoryBound + b.Bubble + b.TensorParallel + b.ContextParallel + b.ExpertAllToAll
                            + b.PipelineP2P + b.DataParallel + b.Optimizer, 9);
            Assert.True(b.TpRaw >= b.TensorParallel - 1e-12, r.Name);
        }
        var (bad, _, err) = Run("--breakdown");
        Assert.Equal(2, bad);
        Assert.Contains("--breakdown", err);
    }

    [Fact]
    public void Llama3LayoutWithUnevenEndsPlans()
    {
        var (code, output, _) = Run("--model", "llama3-405b", "--gpus", "8192", "--tp", "8", "--pp", "16", "--interleave", "2", "--pp-uneven-ends", "--json");
        Assert.Equal(0, code);
        Assert.Contains("uneven ends", output);
    }

    [Fact]
    public void UnparseableNumberIsExit2()
    {
        var (code, _, err) = Run("--gpus", "many");
        Assert.Equal(2, code);
        Assert.Contains("many", err);
    }

    [Fact]
    public void UserbuffersCostWhatTheirChunksAndSmMarginsCost()
    {
        // NeMo's Llama 3.1 70B layout (DGXC): userbuffers with 24/16 SMs kept from the row-parallel forward GEMMs is slower than
        // the same TP communication hidden for free (--tp-overlap 1), and says so in the assumptions.
        string[] layout = ["--model", "llama3-70b", "--gpus", "64", "--tp", "4", "--pp", "4", "--cp", "2", "--interleave", "5", "--json"];
        double Step(params string[] extra)
        {
            var (code, output, _) = Run([.. layout, .. extra]);
            Assert.Equal(0, code);
            using var doc = System.Text.Json.JsonDocument.Parse(output);
            return doc.RootElement.GetProperty("plan").GetProperty("stepTimeSeconds").GetDouble();
        }
        double free = Step("--tp-overlap", "1"), ub = Step("--userbuffers", "24,16");
        Assert.InRange(ub / free, 1.005, 1.05);
        Assert.True(Step("--userbuffers", "0,0") < ub);
        var (_, text, _) = Run("--model", "llama3-70b", "--gpus", "64", "--tp", "4", "--pp", "4", "--cp", "2", "--userbuffers", "24,16");
        Assert.Contains("userbuffers", text);
        Assert.Contains("132 − 24 / − 16 SMs", text);
    }

    [Fact]
    public void JsonHasTheHeadlineNumbers()
    {
        var (code, output, _) = Run("--model", "gpt3-175b", "--gpus", "1024", "--tp", "8", "--pp", "8", "--json");
        Assert.Equal(0, code);
        using var doc = System.Text.Json.JsonDocument.Parse(output);
        var plan = doc.RootElement.GetProperty("plan");
        Assert.Equal(1024, plan.GetProperty("gpusUsed").GetInt64());
        // 1024 / (8·8) = 16-way data parallel; batch 16M tokens / 2048 = 8192 sequences → 512 micro-batches of 1
        Assert.Equal(16, plan.GetProperty("parallelism").GetProperty("dp").GetInt32());
        Assert.Equal(512, plan.GetProperty("stepSeconds").GetProperty("microBatches").GetInt64());
        foreach (var key in new[] { "mfu", "wallClockDays", "tokensPerSecond", "modelTflopsPerGpu" })
            Assert.True(plan.GetProperty(key).GetDouble() > 0, key);
        Assert.True(plan.GetProperty("energyCost").GetProperty("energyMWh").GetDouble() > 0);
        Assert.True(doc.RootElement.GetProperty("assumptions").GetArrayLength() > 10);
    }

    [Fact]
    public void TpAsyncBackwardHidesPartOfTheTensorParallelTime()
    {
        // GPT-3 on TP 8 × PP 8 with sequence parallelism: of the 4 collective pairs per layer (2 forward, 2 backward) the 2
        // column-parallel reduce-scatters hide under their wgrad GEMMs and their re-gathers under dgrad, so the exposed TP
        // time falls to 3/4, plus the 1/4 that hides costing the compute under it its NVLink SM share (0.15): 0.75 + 0.15·0.5 =
        // 0.825; with the share set to 0 (--intra-comm-sm-share) exactly 3/4 (hand-computed case in StepTimeHandComputedTests).
        double Tp(params string[] extra)
        {
            var (code, output, _) = Run(["--model", "gpt3-175b", "--gpus", "1024", "--tp", "8", "--pp", "8", "--json", .. extra]);
            Assert.Equal(0, code);
            using var doc = System.Text.Json.JsonDocument.Parse(output);
            return doc.RootElement.GetProperty("plan").GetProperty("stepSeconds").GetProperty("tensorParallel").GetDouble();
        }
        Assert.Equal(0.825, Tp("--tp-async-backward") / Tp(), 3);
        Assert.Equal(0.75, Tp("--tp-async-backward", "--intra-comm-sm-share", "0") / Tp("--intra-comm-sm-share", "0"), 3);
    }

    [Fact]
    public void SweepWritesTableAndSvg()
    {
        string svg = Path.Combine(Path.GetTempPath(), $"plan-sweep-{Guid.NewGuid():N}.svg");
        try
        {
            var (code, output, _) = Run("--model", "llama3-8b", "--sweep", "gpus=64..512", "--svg", svg);
            Assert.Equal(0, code);
            foreach (var n in new[] { "64", "128", "256", "512" }) Assert.Contains(n, output);
            string text = File.ReadAllText(svg);
            Assert.StartsWith("<svg", text);
            Assert.Equal(3, System.Text.RegularExpressions.Regex.Matches(text, "<polyline").Count);
        }
        finally { File.Delete(svg); }
    }

    [Fact]
    public void SearchWithNothingFittingExplains()
    {
        var (code, output, _) = Run("--model", "megatron-1t", "--gpu", "V100", "--precision", "fp16", "--gpus", "8", "--search");
        Assert.Equal(1, code);
        Assert.Contains("fits no layout", output);
    }
}
