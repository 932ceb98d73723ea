using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;
using Supercluster.Checkpointing;
using Supercluster.Inference;
using Supercluster.Server;
using Supercluster.Server.Dashboard;
using static TorchSharp.torch;

namespace Supercluster.Tests.Serving;

/// <summary>Issue 16, items 5–8 and 10–12: serving never fails other requests and says the truth in its status.</summary>
[Collection("Serving")]
public class RobustnessTests(ServingFixture f)
{
    static JsonObject Completion(string prompt, int maxTokens, double temperature = 0, bool stream = false) => new()
    {
        ["prompt"] = prompt, ["max_tokens"] = maxTokens, ["temperature"] = temperature, ["stream"] = stream,
    };

    [Fact]
    public async Task Tiny_temperatures_are_greedy_and_fail_no_other_sequence()
    {
        var greedy = Completion("We the people", 20);
        var tiny = Completion("We the people", 20, 1.5e-38);
        var sampled = Completion("The state", 20, 1.0);
        sampled["seed"] = 3; sampled["n"] = 2;
        var streamed = Completion("The union", 20, 0.7, stream: true);
        // All in flight together, so they share decode steps (before: NaN → multinomial threw → every sequence failed).
        var tasks = new[] { f.Http.PostJson("/v1/completions", tiny), f.Http.PostJson("/v1/completions", sampled), f.Http.PostJson("/v1/completions", greedy) };
        var stream = f.Http.PostStream("/v1/completions", streamed);
        var results = await Task.WhenAll(tasks);
        Assert.All(results, r => Assert.True(r.Status == 200, r.Body.ToJsonString()));
        var (chunks, done, _) = await stream;
        Assert.True(done);
        Assert.DoesNotContain(chunks, c => c["error"] is not null);
        Assert.Equal((string?)results[2].Body["choices"]![0]!["text"], (string?)results[0].Body["choices"]![0]!["text"]);
        Assert.Equal(Sampler.GreedyBelow, 1e-5);
    }

    [Fact]
    public void Sampling_never_picks_a_NaN_token_takes_an_infinite_one_and_fails_clearly_when_nothing_is_finite()
    {
        TorchSetup.Init();
        var o = new SamplingOptions { Temperature = 1.0 };
        using var gen = new Generator(1, CPU);
        for (int i = 0; i < 50; i++)
        {
            int t = Sampler.Pick(tensor(new[] { float.NaN, 1f, 2f, float.NaN }), o, gen);
            Assert.InRange(t, 1, 2);
        }
        Assert.Equal(2, Sampler.Pick(tensor(new[] { float.NaN, 1f, 2f, float.NaN }), o with { Temperature = 0 }, gen));   // argmax would pick NaN
        Assert.Equal(1, Sampler.Pick(tensor(new[] { 0f, float.PositiveInfinity, 3f }), o, gen));
        Assert.Equal(1, Sampler.Pick(tensor(new[] { 0f, 5f, 3f }) * 1e30f, o with { Temperature = 1e-30 }, gen));         // greedy below 1e-5
        var e = Assert.Throws<InvalidOperationException>(() => { Sampler.Pick(tensor(new[] { float.NaN, float.NegativeInfinity }), o, gen); });
        Assert.Contains("no finite logit", e.Message);
    }

    public static TheoryData<string, string> BadText => new()
    {
        { "/v1/completions", "{\"prompt\": \"a\\ud800b\", \"max_tokens\": 2}" },
        { "/v1/chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": \"\\udfff\"}], \"max_tokens\": 2}" },
        { "/v1/embeddings", "{\"input\": [\"ok\", \"\\ud83d\"]}" },
        { "/v1/search", "{\"query\": \"\\ud800\\ud800\"}" },
        { "/v1/completions", "{\"prompt\": \"x\", \"\\ud800\": 1}" },
    };

    [Theory]
    [MemberData(nameof(BadText))]
    public async Task Lone_surrogates_are_400(string path, string json)
    {
        var (s, body) = await f.Http.PostJson(path, json);
        Http.AssertError(s, body, 400);
        Assert.Equal("invalid_encoding", (string?)body["error"]!["code"]);
    }

    [Theory]
    [InlineData("/v1/completions", "{\"prompt\": \"", "\", \"max_tokens\": 2}")]
    [InlineData("/v1/chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": \"", "\"}]}")]
    [InlineData("/v1/embeddings", "{\"input\": \"", "\"}")]
    [InlineData("/v1/search", "{\"query\": \"", "\"}")]
    public async Task Invalid_utf8_is_400(string path, string before, string after)
    {
        foreach (var bad in new byte[][] { [0xff], [0xc3], [0xed, 0xa0, 0x80] /* encoded surrogate */, [0xf8, 0x88, 0x80, 0x80, 0x80] })
        {
            var bytes = Encoding.UTF8.GetBytes(before).Concat(bad).Concat(Encoding.UTF8.GetBytes(after)).ToArray();
            using var req = new HttpRequestMessage(HttpMethod.Post, path) { Content = new ByteArrayContent(bytes) };
            req.Content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
            using var resp = await f.Http.SendAsync(req);
            var body = JsonNode.Parse(await resp.Content.ReadAsStringAsync())!;
            Http.AssertError((int)resp.StatusCode, body, 400);
            Assert.Equal("invalid_encoding", (string?)body["error"]!["code"]);
        }
    }

    [Fact]
    public async Task A_full_queue_gives_429_with_retry_after_streamed_or_not_never_an_sse_200()
    {
        await using var server = await f.StartExtraAsync(new ServerOptions { MaxBatch = 1, MaxQueue = 1 });
        var sched = server.State.Model!.Scheduler;
        sched.StepDelay = TimeSpan.FromMilliseconds(30);
        using var http = new HttpClient { BaseAddress = new Uri(server.Url) };
        var running = http.PostJson("/v1/completions", Completion("a", 60));
        Assert.True(SpinWait.SpinUntil(() => sched.Active == 1, 10000), "first request not decoding");
        var waiting = http.PostJson("/v1/completions", Completion("b", 2));
        Assert.True(SpinWait.SpinUntil(() => sched.QueueDepth == 1, 10000), "second request not queued");
        foreach (var (path, stream) in new[] { ("/v1/completions", true), ("/v1/chat/completions", true), ("/v1/completions", false), ("/v1/chat/completions", false) })
        {
            JsonObject req = path.Contains("chat")
                ? new JsonObject { ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "hi" }), ["max_tokens"] = 4, ["stream"] = stream }
                : Completion("c", 4, stream: stream);
            using var msg = new HttpRequestMessage(HttpMethod.Post, path) { Content = new StringContent(req.ToJsonString(), Encoding.UTF8, "application/json") };
            using var resp = await http.SendAsync(msg, HttpCompletionOption.ResponseHeadersRead);
            Assert.Equal(429, (int)resp.StatusCode);
            Assert.Equal("application/json", resp.Content.Headers.ContentType?.MediaType);
            Assert.Equal(TimeSpan.FromSeconds(1), resp.Headers.RetryAfter?.Delta);
            Http.AssertError(429, JsonNode.Parse(await resp.Content.ReadAsStringAsync())!, 429);
        }
        Assert.Equal(200, (await running).Status);
        Assert.Equal(200, (await waiting).Status);
    }

    [Fact]
    public async Task More_choices_than_the_queue_can_ever_hold_are_400_not_429()
    {
        await using var server = await f.StartExtraAsync(new ServerOptions { MaxQueue = 2 });
        using var http = new HttpClient { BaseAddress = new Uri(server.Url) };
        var req = Completion("x", 2, 1.0);
        req["n"] = 3;
        var (s, body) = await http.PostJson("/v1/completions", req);
        Http.AssertError(s, body, 400, "n");
        req["n"] = 1; req["prompt"] = new JsonArray("a", "b", "c");
        (s, body) = await http.PostJson("/v1/completions", req);
        Http.AssertError(s, body, 400, "n");
        var chat = new JsonObject { ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "hi" }), ["n"] = 3, ["max_tokens"] = 2 };
        (s, body) = await http.PostJson("/v1/chat/completions", chat);
        Http.AssertError(s, body, 400, "n");
        req["prompt"] = "a"; req["n"] = 2;
        (s, body) = await http.PostJson("/v1/completions", req);
        Assert.True(s == 200, body.ToJsonString());
    }

    [Fact]
    public async Task The_model_field_must_name_the_served_model()
    {
        var chat = new JsonObject { ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "hi" }), ["max_tokens"] = 2 };
        foreach (var (path, req) in new[] { ("/v1/completions", Completion("x", 2)), ("/v1/chat/completions", chat), ("/v1/embeddings", new JsonObject { ["input"] = "x" }) })
        {
            req["model"] = "gpt-nonexistent";
            var (s, body) = await f.Http.PostJson(path, req);
            Http.AssertError(s, body, 404, "model");
            Assert.Equal("model_not_found", (string?)body["error"]!["code"]);
            foreach (var name in new[] { "tiny-run/step_0000300", "tiny-run", "tiny" })   // served name, run, preset
            {
                req["model"] = name;
                (s, body) = await f.Http.PostJson(path, req);
                Assert.True(s == 200, $"{name}: {body.ToJsonString()}");
            }
        }
    }

    [Theory]
    [InlineData("/v1/completions", "best_of", "3")]
    [InlineData("/v1/completions", "suffix", "\"end\"")]
    [InlineData("/v1/completions", "made_up_field", "1")]
    [InlineData("/v1/chat/completions", "audio", "{\"voice\":\"alloy\"}")]
    [InlineData("/v1/chat/completions", "functions", "[{\"name\":\"f\"}]")]
    [InlineData("/v1/embeddings", "dimensions", "8")]
    public async Task Unsupported_fields_are_400_not_silently_dropped(string path, string field, string value)
    {
        var basic = path switch
        {
            "/v1/completions" => "\"prompt\": \"x\", \"max_tokens\": 2",
            "/v1/chat/completions" => "\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"max_tokens\": 2",
            _ => "\"input\": \"x\"",
        };
        var (s, body) = await f.Http.PostJson(path, $"{{{basic}, \"{field}\": {value}}}");
        Http.AssertError(s, body, 400, field);
        Assert.Equal("unsupported_parameter", (string?)body["error"]!["code"]);
        // Defaults that ask for nothing are accepted, as is "user".
        (s, body) = await f.Http.PostJson(path, $"{{{basic}, \"{field}\": null, \"user\": \"u-1\"}}");
        Assert.True(s == 200, body.ToJsonString());
    }

    [Fact]
    public async Task A_malformed_run_is_flagged_and_never_fails_the_others()
    {
        using var dir = new TempDir();
        void Run(string name, string? config, string? metrics)
        {
            var d = Path.Combine(dir.Path, name);
            Directory.CreateDirectory(d);
            if (config is not null) File.WriteAllText(Path.Combine(d, "config.json"), config);
            if (metrics is not null) File.WriteAllText(Path.Combine(d, "metrics.jsonl"), metrics);
        }
        Run("good", "{\"options\": {\"steps\": 10}}", "{\"type\":\"train\",\"step\":1,\"loss\":5.0}\n");
        Run("array-config", "[1, 2, 3]", "{\"type\":\"train\",\"step\":1,\"loss\":5.0}\n");
        Run("string-steps", "{\"options\": {\"steps\": \"many\"}, \"model\": 3}", null);
        Run("bad-steps", "{\"options\": {\"steps\": 10}}",
            "{\"type\":\"train\",\"step\":\"x\",\"loss\":5.0}\n{\"type\":\"eval\",\"step\":1.5,\"val_loss\":4}\n{\"type\":\"train\",\"step\":-3}\n[1]\nnot json\n{\"type\":\"train\",\"step\":2,\"loss\":4.0}\n");
        Run("huge-checkpoint", "{\"options\": {\"steps\": 10}}", "{\"type\":\"train\",\"step\":1,\"loss\":5.0}\n");
        Directory.CreateDirectory(Path.Combine(dir.Path, "huge-checkpoint", "checkpoints", "step_99999999999999999999"));
        Directory.CreateDirectory(Path.Combine(dir.Path, "huge-checkpoint", "checkpoints", "step_0000005"));   // no manifest

        await using var server = await SuperclusterServer.StartAsync(new ServerOptions { RunsDir = dir.Path, Port = 0 });
        using var http = new HttpClient { BaseAddress = new Uri(server.Url) };
        var runs = (await http.GetJson("/api/runs"))["runs"]!.AsArray().ToDictionary(r => (string)r!["name"]!, r => r!);
        Assert.Equal(["array-config", "bad-steps", "good", "huge-checkpoint", "string-steps"], runs.Keys.Order());
        Assert.Equal(1, (int)runs["good"]["step"]!);
        Assert.Equal(0, (int)runs["good"]["bad_metric_lines"]!);
        Assert.Equal(2, (int)runs["bad-steps"]["step"]!);
        Assert.Equal(5, (int)runs["bad-steps"]["bad_metric_lines"]!);
        Assert.Equal(4.0, (double)runs["bad-steps"]["loss"]!);
        Assert.Equal("config.json is not a JSON object", (string?)runs["array-config"]["config_error"]);
        Assert.Null(runs["string-steps"]["steps"]);
        var bad = runs["huge-checkpoint"]["bad_checkpoints"]!.AsArray().Select(x => (string)x!).Order().ToArray();
        Assert.Equal(2, bad.Length);
        Assert.StartsWith("step_0000005: no manifest", bad[0]);
        Assert.StartsWith("step_99999999999999999999: not a valid step number", bad[1]);
        foreach (var name in runs.Keys)
        {
            Assert.Equal(name, (string?)(await http.GetJson($"/api/runs/{name}"))["name"]);
            await http.GetJson($"/api/runs/{name}/metrics?offset=0");
        }
        var records = (await http.GetJson("/api/runs/bad-steps/metrics?offset=0"))["records"]!.AsArray();
        Assert.Equal(2, (int)records.Single()!["step"]!);
    }

    [Fact]
    public void Checkpoint_verification_is_cached_until_a_file_changes()
    {
        using var dir = new TempDir();
        var run = Path.Combine(dir.Path, "copy");
        var cp = Path.Combine(run, "checkpoints", Path.GetFileName(f.Checkpoint));
        Directory.CreateDirectory(cp);
        foreach (var file in Directory.GetFiles(f.Checkpoint)) File.Copy(file, Path.Combine(cp, Path.GetFileName(file)));
        File.WriteAllText(Path.Combine(run, "config.json"), "{\"options\": {\"steps\": 300}}");
        var scanner = new RunScanner(dir.Path);
        Assert.Single(scanner.Summary(run)["checkpoints"]!.AsArray());
        Assert.Equal(1, scanner.Verifications);
        for (int i = 0; i < 5; i++) Assert.Single(scanner.Summary(run)["checkpoints"]!.AsArray());
        Assert.Equal(1, scanner.Verifications);   // five polls, no re-hash
        // Flip one byte (same size, new mtime): verified again, and now rejected.
        var weights = Path.Combine(cp, ModelCheckpoint.ModelFile);
        using (var fs = new FileStream(weights, FileMode.Open, FileAccess.ReadWrite)) { fs.Position = fs.Length - 1; int b = fs.ReadByte(); fs.Position = fs.Length - 1; fs.WriteByte((byte)(b ^ 1)); }
        File.SetLastWriteTimeUtc(weights, DateTime.UtcNow.AddMinutes(1));
        var summary = scanner.Summary(run);
        Assert.Equal(2, scanner.Verifications);
        Assert.Empty(summary["checkpoints"]!.AsArray());
        Assert.Contains("SHA-256", (string?)summary["bad_checkpoints"]![0]);
    }
}
