using System.Text.Json.Nodes;
using Supercluster.Checkpointing;
using Supercluster.Cli.Commands;
using Supercluster.Data;
using Supercluster.FineTuning;
using Supercluster.Server;
using Supercluster.Tests.Serving;
using Supercluster.Tests.Training;
using Supercluster.Training;

namespace Supercluster.Tests.FineTuning;

/// <summary>Real runs: fine-tuning from our own checkpoints, a LoRA run on chat data (resume, merge), and serving the adapter by name.</summary>
[Collection("Console")]
public class FineTuneRunTests : IClassFixture<TrainingFixture>
{
    readonly TrainingFixture _data;

    public FineTuneRunTests(TrainingFixture data)
    {
        TorchSetup.Init();
        _data = data;
    }

    TrainOptions Base(string outDir, string model) => new()
    {
        DataDir = _data.DataDir, OutDir = outDir, Model = model, BatchSize = 4, SeqLen = 32, Steps = 6, Lr = 3e-3, Warmup = 1,
        Device = "cpu", EvalTokens = 256, Seed = 5,
    };

    static List<JsonNode> Metrics(string run, string type) =>
        MetricsLog.Read(Path.Combine(run, "metrics.jsonl")).Where(r => (string?)r["type"] == type).Select(r => (JsonNode)r).ToList();

    [Fact]
    public void Fine_tuning_from_a_checkpoint_starts_at_its_validation_loss_with_its_architecture()
    {
        using var dir = new TempDir();
        var pre = new Trainer(Base(dir["llama"], "llama-tiny"), TextWriter.Null).Run();
        // --model says gpt2 "tiny": the architecture comes from the checkpoint (llama) all the same.
        var log = new StringWriter();
        new Trainer(Base(dir["ft"], "tiny") with { InitFrom = dir["llama"], Steps = 2 }, log).Run();
        var start = Metrics(dir["ft"], "eval").First();
        Assert.Equal(0, (int)start["step"]!);
        Assert.Equal(pre.FinalValLoss!.Value, (double)start["val_loss"]!, 1e-6);   // same weights, same rows: the same loss
        Assert.Contains("initialised from", log.ToString());
        Assert.Equal(2, (int)ModelCheckpoint.ReadState(new CheckpointStore(dir["ft"]).Latest()!).Step);    // the step counter started fresh
        Assert.Contains("\"Family\": \"Llama\"".ToLowerInvariant(), File.ReadAllText(Path.Combine(new CheckpointStore(dir["ft"]).Latest()!, "config.json")).ToLowerInvariant());

        // A data set made with another tokenizer is refused in one line.
        Preparer.Run([new Document("some words for another tokenizer "), new Document("and more words here")], new PrepareOptions { OutDir = dir["cl"], Tokenizer = "cl100k", ValFraction = 0 });
        var e = Assert.Throws<BadInputException>(() => new Trainer(Base(dir["bad"], "tiny") with { DataDir = dir["cl"], InitFrom = dir["llama"] }, TextWriter.Null).Run());
        Assert.Contains("tokenizer is 'byte', the data's is 'cl100k'", e.Message);
    }

    static readonly string[] Ads =
    [
        """{"prompt":"tea; students","completion":"Sip smart."}""",
        """{"prompt":"socks; runners","completion":"Run light."}""",
        """{"messages":[{"role":"user","content":"pens; poets"},{"role":"assistant","content":"Ink it."}]}""",
        """{"prompt":"maps; hikers","completion":"Go far."}""",
    ];

    [Fact]
    public async Task A_LoRA_run_on_chat_data_resumes_exactly_merges_and_is_served_by_name()
    {
        using var dir = new TempDir();
        new Trainer(Base(dir["base"], "llama-tiny"), TextWriter.Null).Run();
        File.WriteAllLines(dir["ads.jsonl"], Enumerable.Range(0, 8).SelectMany(_ => Ads));
        ChatPreparer.Run([dir["ads.jsonl"]], new ChatPrepareOptions { OutDir = dir["chat"], Tokenizer = "byte", SeqLen = 64, ValFraction = 0.25 });
        TrainOptions Lora(string outDir, int steps) => new()
        {
            DataDir = dir["chat"], OutDir = outDir, BatchSize = 2, Steps = steps, Lr = 1e-2, Warmup = 0, MinLrRatio = 1, Device = "cpu", Seed = 7,
            InitFrom = dir["base"], LoraRank = 4, LoraAlpha = 8, LoraTargets = "q,v,gate", LoraDropout = 0.1, CheckpointEvery = 2, Resume = "auto",
        };
        var log = new StringWriter();
        new Trainer(Lora(dir["straight"], 4), log).Run();
        Assert.Contains("LoRA r=4", log.ToString());
        Assert.Matches(@"optimizer state [\d.]+ MB vs [\d.]+ MB for full fine-tuning", log.ToString());
        string ckpt = new CheckpointStore(dir["straight"]).Latest()!;
        Assert.True(File.Exists(Path.Combine(ckpt, PeftAdapter.WeightsFile)) && File.Exists(Path.Combine(ckpt, PeftAdapter.ConfigFile)));
        Assert.False(File.Exists(Path.Combine(ckpt, ModelCheckpoint.ModelFile)));                        // the base is not copied
        var evals = Metrics(dir["straight"], "eval");                                                    // val loss over the replies only
        Assert.Equal([0, 4], evals.Select(e => (int)e["step"]!));
        Assert.True((double)evals[1]["val_loss"]! < (double)evals[0]["val_loss"]!, "the adapter did not lower the validation loss on replies");

        // Exact resume (constant lr, so a 2-step run is the first half of the 4-step one): 2 steps, then 2 more.
        new Trainer(Lora(dir["resumed"], 2), TextWriter.Null).Run();
        new Trainer(Lora(dir["resumed"], 4), TextWriter.Null).Run();
        var a = SafeTensors.Read(Path.Combine(ckpt, PeftAdapter.WeightsFile)).Tensors;
        var b = SafeTensors.Read(Path.Combine(new CheckpointStore(dir["resumed"]).Latest()!, PeftAdapter.WeightsFile)).Tensors;
        Assert.Equal(a.Keys.Order(), b.Keys.Order());
        Assert.All(a, kv => Assert.True(kv.Value.eq(b[kv.Key]).all().item<bool>(), kv.Key));
        Assert.Contains(a.Values, t => t.abs().sum().item<float>() > 0);

        // merge → a plain checkpoint; serve the base with the adapter by name, and the merged checkpoint: same answers.
        var (code, output, err) = InProcessCli.Run([MergeCommand.Create()], "merge", "--adapter", dir["straight"], "--out", dir["merged"]);
        Assert.True(code == 0, output + err);
        await using var adapted = await SuperclusterServer.StartAsync(new ServerOptions { Checkpoint = dir["base"], Adapters = [$"ads={dir["straight"]}"], Port = 0, Device = "cpu" });
        await using var merged = await SuperclusterServer.StartAsync(new ServerOptions { Checkpoint = dir["merged"], Port = 0, Device = "cpu" });
        using var http = new HttpClient { BaseAddress = new Uri(adapted.Url) };
        using var http2 = new HttpClient { BaseAddress = new Uri(merged.Url) };
        var ids = (await http.GetJson("/v1/models"))["data"]!.AsArray().Select(m => (string?)m!["id"]).ToList();
        Assert.Contains("ads", ids);
        Assert.Equal(2, ids.Count);
        JsonObject Chat(string model) => new()
        {
            ["model"] = model, ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "tea; students" }), ["max_tokens"] = 12, ["temperature"] = 0,
        };
        var (s1, viaAdapter) = await http.PostJson("/v1/chat/completions", Chat("ads"));
        Assert.Equal(200, s1);
        Assert.Equal("ads", (string?)viaAdapter["model"]);
        var (_, viaMerged) = await http2.PostJson("/v1/chat/completions", Chat("merged"));
        Assert.Equal((string?)viaMerged["choices"]![0]!["message"]!["content"], (string?)viaAdapter["choices"]![0]!["message"]!["content"]);
        var (s404, _) = await http.PostJson("/v1/chat/completions", Chat("no-such-adapter"));
        Assert.Equal(404, s404);
    }
}
