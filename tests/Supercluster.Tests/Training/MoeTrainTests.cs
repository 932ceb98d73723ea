using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Supercluster.Cli.Commands;
using Supercluster.Server;
using Supercluster.Tests.Serving;

namespace Supercluster.Tests.Training;

/// <summary>MoE end to end in-process: train flags and bad input, metrics, plan's numbers, sample, eval, serve.</summary>
[Collection("Console")]
public class MoeTrainTests : IClassFixture<TrainingFixture>
{
    readonly TrainingFixture _data;

    public MoeTrainTests(TrainingFixture data)
    {
        TorchSetup.Init();
        _data = data;
    }

    static (int Code, string Out, string Err) Run(params string[] args) =>
        InProcessCli.Run([TrainCommand.Create(), SampleCommand.Create(), EvalCommand.Create(), PlanCommand.Create()], args);

    string[] Train(string outDir, params string[] extra)
    {
        var options = new Dictionary<string, string>
        {
            ["--data"] = _data.DataDir, ["--out"] = outDir, ["--model"] = "moe-tiny", ["--batch-size"] = "2", ["--seq-len"] = "16", ["--steps"] = "3", ["--device"] = "cpu", ["--eval-tokens"] = "256",
        };
        for (int i = 0; i < extra.Length; i += 2) options[extra[i]] = extra[i + 1];
        return ["train", .. options.SelectMany(kv => new[] { kv.Key, kv.Value })];
    }

    [Theory]
    [InlineData("--active-experts 9", "--active-experts 9 exceeds --experts 8")]
    [InlineData("--ep 3", "--ep 3 does not divide --experts 8")]
    [InlineData("--ep 2", "--ep 2 needs 2 or more ranks")]
    [InlineData("--capacity-factor 0", "--capacity-factor = 0, expected a positive number")]
    [InlineData("--capacity-factor -1.5", "--capacity-factor = -1.5")]
    [InlineData("--model tiny --active-experts 2", "--active-experts 2 exceeds --experts 1")]
    [InlineData("--model tiny --capacity-factor 1.5", "model 'tiny' has 1 expert")]
    public void Bad_moe_options_give_one_line_and_exit_2(string flags, string message)
    {
        using var dir = new TempDir();
        var (code, _, err) = Run(Train(dir["run"], flags.Split(' ')));
        Assert.Equal(2, code);
        var line = Assert.Single(err.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.Contains(message, line);
        Assert.False(Directory.Exists(Path.Combine(dir["run"], "checkpoints")));
    }

    [Fact]
    public void Moe_flags_on_a_dense_checkpoint_are_refused()
    {
        using var dir = new TempDir();
        Assert.Equal(0, Run(Train(dir["dense"], "--model", "llama-tiny", "--steps", "1")).Code);
        var (code, _, err) = Run(Train(dir["moe"], "--model", "llama-tiny", "--experts", "4", "--active-experts", "2", "--resume", dir["dense"]));
        Assert.Equal(2, code);
        Assert.Contains("--experts 4: checkpoint", Assert.Single(err.Split('\n', StringSplitOptions.RemoveEmptyEntries)));
        Assert.Contains("has no experts", err);
    }

    [Fact]
    public async Task Moe_trains_logs_expert_load_matches_plan_and_serves()
    {
        using var dir = new TempDir();
        var (code, output, err) = Run(Train(dir["run"], "--steps", "4", "--capacity-factor", "1.0"));
        Assert.True(code == 0, err);

        // Metrics: per MoE layer expert load (fractions summing to 1), aux and z-loss apart from the LM loss, dropped slots.
        var steps = File.ReadAllLines(Path.Combine(dir["run"], "metrics.jsonl")).Select(l => JsonNode.Parse(l)!).Where(n => (string?)n["type"] == "train").ToList();
        Assert.Equal(4, steps.Count);
        foreach (var s in steps)
        {
            var layers = s["moe"]!["layers"]!.AsArray();
            Assert.Equal(2, layers.Count);
            foreach (var l in layers)
            {
                var load = l!["load"]!.AsArray().Select(v => (double)v!).ToArray();
                Assert.Equal(8, load.Length);
                Assert.Equal(1.0, load.Sum(), 3);
                Assert.InRange((double)l["aux_loss"]!, 0.99, 8.0);     // E·Σ f·P ≥ 1 up to fp rounding when f = P; ≤ E
                Assert.True((double)l["z_loss"]! > 0);
                Assert.True((long)l["dropped"]! >= 0);
            }
            Assert.NotEqual((double)s["loss"]!, (double)s["moe"]!["aux_loss"]!);
        }
        Assert.Matches(@"aux \d\.\d{3} z \d+\.\d{2} load max \d+\.\d{2}×", err);   // the live line (stderr)

        // train's parameters and FLOPs per token equal plan --json's for the same configuration.
        var m = Regex.Match(output, @"parameters \(plan's count\): total (\d+), active (\d+); model FLOPs per token ([0-9.E+]+) at seq (\d+)");
        Assert.True(m.Success, output);
        int vocab = JsonNode.Parse(File.ReadAllText(Path.Combine(dir["run"], "config.json")))!["model"]!["vocab_size"]!.GetValue<int>();
        var (pc, plan, perr) = Run("plan", "--model", "moe-tiny", "--vocab", vocab.ToString(), "--seq", m.Groups[4].Value, "--gpus", "1", "--tp", "1", "--batch", "8", "--json");
        Assert.True(pc == 0, perr);
        var p = JsonNode.Parse(plan)!["plan"]!;
        Assert.Equal(long.Parse(m.Groups[1].Value), (long)p["totalParams"]!);
        Assert.Equal(long.Parse(m.Groups[2].Value), (long)p["activeParams"]!);
        Assert.True((long)p["activeParams"]! < (long)p["totalParams"]!);
        Assert.Equal(double.Parse(m.Groups[3].Value, CultureInfo.InvariantCulture), (double)p["modelFlopsPerToken"]!, 6);

        // sample and eval on the MoE checkpoint.
        (code, output, err) = Run("sample", "--checkpoint", dir["run"], "--prompt", "The union", "--max-new-tokens", "8", "--device", "cpu");
        Assert.True(code == 0, err);
        Assert.Contains("The union", output);
        (code, output, err) = Run("eval", "--checkpoint", dir["run"], "--data", _data.DataDir, "--device", "cpu", "--batch-size", "2", "--eval-tokens", "128");
        Assert.True(code == 0, err);
        Assert.Matches(@"val loss \d+\.\d{4}", output);

        // serve: a real server on loopback answers the completions API (batched decoding with the KV cache) and embeddings.
        await using var server = await SuperclusterServer.StartAsync(new ServerOptions { Checkpoint = dir["run"], Port = 0 });
        using var http = new HttpClient { BaseAddress = new Uri(server.Url), Timeout = TimeSpan.FromSeconds(60) };
        var (status, body) = await http.PostJson("/v1/completions", new JsonObject { ["prompt"] = new JsonArray("We the", "The union"), ["max_tokens"] = 6, ["temperature"] = 0 });
        Assert.True(status == 200, body.ToJsonString());
        Assert.Equal(2, body["choices"]!.AsArray().Count);
        Assert.Equal(12, (int)body["usage"]!["completion_tokens"]!);
        (status, body) = await http.PostJson("/v1/embeddings", new JsonObject { ["input"] = "union" });
        Assert.True(status == 200, body.ToJsonString());
        Assert.Equal(64, body["data"]![0]!["embedding"]!.AsArray().Count);
    }

    [Fact]
    public void Gpt2_family_trains_with_gelu_experts_every_second_block()
    {
        using var dir = new TempDir();
        var (code, output, err) = Run(Train(dir["run"], "--model", "tiny", "--experts", "4", "--active-experts", "2", "--moe-every", "2", "--steps", "2"));
        Assert.True(code == 0, err);
        Assert.Contains("MoE: 1 of 2 blocks, 4 experts, top-2, dropless", output);
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(dir["run"], "config.json")))!["model"]!;
        Assert.Equal(4, (int)config["experts"]!);
        Assert.Equal(2, (int)config["moe_every"]!);
    }
}
