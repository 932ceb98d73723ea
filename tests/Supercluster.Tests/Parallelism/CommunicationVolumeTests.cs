using System.Text.Json;
using System.Text.Json.Nodes;
using Supercluster.Model;
using Supercluster.Planning;
using Supercluster.Tests.Distributed;
using Supercluster.Tests.Planning;
using Supercluster.Tests.Training;
using Supercluster.Training;

namespace Supercluster.Tests.Parallelism;

/// <summary>
/// The communication volume <c>plan</c> predicts (<see cref="CommunicationVolume"/>) against what <c>train</c>'s
/// communicators count (<c>comm_bytes_by_group</c> in metrics.jsonl) under a real mpirun. Both count by the one per-rank
/// convention of <see cref="Collectives"/> from the same tensor sizes, so they must agree exactly: on two ranks every term is
/// a whole number of bytes (2(n−1)/n = (n−1)/n·n = 1) and sums of integers below 2^53 are exact in doubles.
/// </summary>
public class CommunicationVolumeTests : IClassFixture<TrainingFixture>
{
    readonly TrainingFixture _data;

    public CommunicationVolumeTests(TrainingFixture data) => _data = data;

    static ModelConfig Tiny(int padMultiple = 1) => ModelPresets.Get("tiny") with { VocabSize = 257, PadVocabMultiple = padMultiple };

    [Fact]
    public void The_formula_gives_hand_computed_volumes_for_tp2_dp2_and_pp2()
    {
        // tiny GPT-2: h 64, f 256, 2 layers, context 64; micro-batch 2 × 16 tokens: an activation is 2·16·64·4 = 8192 bytes,
        // and a two-rank all-reduce sends 2·(1/2) of it.
        // TP2: per layer 4 all-reduces (f, g of attention and MLP), + embedding + head input = 10 × 8192; cross-entropy:
        // all-gather of the 32 row maxima [2, 32] fp32 sends 128, two all-reduces of 32 fp32 send 128 each; the norm 8.
        var tp = CommunicationVolume.Engine(Tiny(2), 2, 16, 1, tp: 2);
        Assert.Equal(new Dictionary<string, double> { ["tp"] = 10 * 8192 + 128 + 2 * 128 + 8 }, tp);

        // DP2: 120,640 parameters (2 × 49,984 per block + wte 257·64 + wpe 64·64 + ln_f 128), fp32, all-reduced, + the loss (fp64).
        Assert.Equal(120_640, CpuCalibration.ParameterCount(Tiny()));
        var dp = CommunicationVolume.Engine(Tiny(), 2, 16, 1, dp: 2);
        Assert.Equal(new Dictionary<string, double> { ["dp_cp"] = 120_640 * 4 + 8 }, dp);

        // PP2 with 2 micro-batches: each stage sends 2 activations (first) or 2 gradients (last) of 8192 bytes, the tied
        // table's gradient 257·64·4 to the other end, the squared norm (fp64) and the loss (fp32).
        foreach (int stage in new[] { 0, 1 })
            Assert.Equal(new Dictionary<string, double> { ["pp"] = 2 * 8192 + 257 * 64 * 4 + 8 + 4 },
                CommunicationVolume.Engine(Tiny(), 2, 16, 2, pp: 2, stage: stage));

        // ZeRO-1 on 2 ranks: reduce-scatter + all-gather of the padded vector, each (n−1)/n of it, + norm + loss.
        Assert.Equal(120_640 * 4 / 2.0 * 2 + 8 + 8, CommunicationVolume.Engine(Tiny(), 2, 16, 1, dp: 2, zero: 1)["dp_cp"]);
        // ZeRO-3 with 2 micro-batches: each micro-batch all-gathers every unit forward and backward and reduce-scatters its
        // gradient (half of each sent), the tied table twice (embedding and head); + norm + loss.
        Assert.Equal(2 * 3 * (120_640 + 257 * 64) * 4 / 2.0 + 8 + 8, CommunicationVolume.Engine(Tiny(), 2, 16, 2, dp: 2, zero: 3)["dp_cp"]);
    }

    [Fact]
    public void The_engine_shape_holds_every_parameter_of_the_model_once_on_one_rank_and_half_the_shards_at_tp2()
    {
        TorchSetup.Init();
        foreach (var name in new[] { "tiny", "llama-tiny" })
        {
            var c = ModelPresets.Get(name) with { VocabSize = 257, PadVocabMultiple = 2 };
            using var model = CausalLM.Create(c, 1);
            long real = model.parameters().Sum(p => p.numel());
            Assert.Equal(real, CommunicationVolume.Engine(c).Parameters);
            // Two pipeline stages hold every parameter once, except GPT-2's tied table, held by both ends.
            double stages = CommunicationVolume.Engine(c, 1, 0, 2).Parameters + CommunicationVolume.Engine(c, 1, 1, 2).Parameters;
            Assert.Equal(real + (c.Family == ModelFamily.Gpt2 ? (double)c.PaddedVocab * c.NEmbd : 0), stages);
        }
    }

    [Fact]
    public void Plan_json_carries_the_volume_per_group_of_a_gpu_layout()
    {
        // GPT-3 175B (96 layers, h 12288) at TP 8 × DP 2, one sequence of 2048 per rank: bf16 activations of 2048·12288·2 bytes,
        // each all-reduce on 8 ranks sending 2·7/8 of it, 4 per layer + embedding + head input; the loss's 3 small collectives.
        var m = ModelCatalog.Get("gpt3-175b");
        var inputs = PlanTestData.Inputs(m, "H100-SXM", 16, new ParallelLayout(Tp: 8, Dp: 2, Zero: 1), batchSequences: 2, seq: 2048);
        var bytes = Planner.Plan(inputs).CommunicationBytes;
        double a = 2048.0 * 12288 * 2, ar = 2 * 7 / 8.0 * a;
        // Sequence parallelism (plan's default): the norms' gradients (2h per layer, bf16) are summed over TP once per step.
        Assert.Equal((96 * 4 + 2) * ar + 7 / 8.0 * 8 * 2048 * 4 + 2 * (2 * 7 / 8.0 * 2048 * 4) + 2 * 7 / 8.0 * 8
            + 2 * 7 / 8.0 * (96 * 2.0 * 12288 * 2), bytes["tp"], 6);
        // DP 2, ZeRO-1: reduce-scatter + all-gather of the GPU's bf16 weights (half of each), the norm and the loss.
        var (attention, mlp) = MemoryModel.ParamsPerGpu(m, inputs.Layout);
        Assert.Equal(Math.Ceiling((attention + mlp) / 2) * 2 * 2 + 8 + 8, bytes["dp_cp"], 6);
        Assert.Equal(["dp_cp", "tp"], bytes.Keys.Order());
    }

    [Fact]
    public void Plan_device_cpu_prints_trains_volume_for_a_layout_under_mpirun()
    {
        // PP2 of tiny, micro-batch 2 × 16, 4 sequences: 2 micro-batches; the same hand count as the formula test above.
        var r = DistributedTests.Mpirun(2, ["plan", "--device", "cpu", "--calibrate", "--model", "tiny", "--vocab", "257", "--micro-batch", "2",
            "--seq", "16", "--batch", "4", "--pp", "2", "--json"]);
        Assert.True(r.ExitCode == 0, r.Out + r.Err);
        var json = JsonNode.Parse(r.Out[r.Out.IndexOf('{')..])!;
        // PP is timed too: train's 1F1B step, whose receives hold the bubble
        Assert.True((double)json["predicted"]!["step"]! > 0 && (double)json["predicted"]!["bubble"]! > 0, json["predicted"]!.ToJsonString());
        Assert.Equal(2 * 8192 + 257 * 64 * 4 + 8 + 4, (double)json["communicationBytes"]!["pp"]!);
    }

    /// <summary>Two ranks, 2 steps: every step's measured bytes per group equal the prediction for the same model and layout.</summary>
    [Theory]
    [InlineData("tiny", "--tp 2", 2, 16, 1)]
    [InlineData("llama-tiny", "--tp 2 --sequence-parallel", 2, 16, 1)]
    [InlineData("tiny", "", 1, 16, 1)]
    [InlineData("tiny", "--pp 2", 2, 16, 2)]
    [InlineData("tiny", "--zero 3", 1, 16, 2)]   // every FSDP unit of tiny has an even size: no padding, so exact too
    public void Measured_bytes_per_group_equal_the_planners_prediction(string model, string layout, int batch, int seq, int micro)
    {
        using var dir = new TempDir();
        string run = dir["run"];
        var flags = layout.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        bool dpOnly = !flags.Contains("--tp") && !flags.Contains("--pp");
        int zero = flags.Contains("--zero") ? int.Parse(flags[Array.IndexOf(flags, "--zero") + 1]) : 0;
        long total = (long)batch * seq * micro * (dpOnly ? 2 : 1);
        var r = DistributedTests.Mpirun(2, ["train", "--data", _data.DataDir, "--out", run, "--model", model, "--batch-size", batch.ToString(),
            "--seq-len", seq.ToString(), "--total-batch-tokens", total.ToString(), "--steps", "2", "--device", "cpu", "--checkpoint-every", "0", "--eval-tokens", "64", .. flags]);
        Assert.True(r.ExitCode == 0, r.Out + r.Err);

        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(run, "config.json")))!;
        var c = JsonSerializer.Deserialize<ModelConfig>(config["model"]!.ToJsonString(), ModelConfig.Json)!;
        Assert.Equal(micro, (int)config["gradient_accumulation"]!);
        int tp = flags.Contains("--tp") ? 2 : 1, pp = flags.Contains("--pp") ? 2 : 1;
        var predicted = CommunicationVolume.Engine(c, batch, seq, micro, tp: tp, pp: pp, dp: dpOnly ? 2 : 1, zero: zero, sequenceParallel: flags.Contains("--sequence-parallel"));
        Assert.NotEmpty(predicted);

        var steps = MetricsLog.Read(Path.Combine(run, "metrics.jsonl")).Where(x => (string?)x["type"] == "train").ToList();
        Assert.Equal(2, steps.Count);
        foreach (var s in steps)
        {
            var measured = s["comm_bytes_by_group"]!.AsObject().ToDictionary(kv => kv.Key, kv => (double)kv.Value!);
            Assert.Equal(predicted.OrderBy(kv => kv.Key), measured.OrderBy(kv => kv.Key));
        }
    }
}
