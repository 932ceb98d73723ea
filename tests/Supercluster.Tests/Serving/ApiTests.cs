using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using Supercluster.Server;

namespace Supercluster.Tests.Serving;

[Collection("Serving")]
public class ApiTests(ServingFixture f)
{
    static JsonObject Completion(string prompt, int maxTokens = 20, double temperature = 0, bool stream = false) => new()
    {
        ["model"] = "tiny", ["prompt"] = prompt, ["max_tokens"] = maxTokens, ["temperature"] = temperature, ["stream"] = stream,
    };

    [Fact]
    public async Task Health_models_and_metrics_answer()
    {
        var health = await f.Http.GetJson("/health");
        Assert.Equal("ok", (string?)health["status"]);
        var models = await f.Http.GetJson("/v1/models");
        Assert.Equal("list", (string?)models["object"]);
        var m = models["data"]![0]!;
        Assert.Equal("model", (string?)m["object"]);
        Assert.Equal("tiny-run/step_0000300", (string?)m["id"]);
        Assert.Equal(64, (int)m["context_length"]!);

        await f.Http.PostJson("/v1/completions", Completion("The state", 5));
        var metrics = await f.Http.GetStringAsync("/metrics");
        foreach (var name in new[] { "supercluster_requests_total{", "supercluster_tokens_generated_total", "supercluster_tokens_per_second",
                     "supercluster_queue_depth", "supercluster_active_sequences", "supercluster_request_duration_seconds_bucket{",
                     "supercluster_dotnet_allocated_bytes ", "supercluster_dotnet_threadpool_work_items ", "supercluster_dotnet_gen0_collections " })
            Assert.Contains(name, metrics);
        Assert.Contains("endpoint=\"/v1/completions\"", metrics);
        var generated = metrics.Split('\n').First(l => l.StartsWith("supercluster_tokens_generated_total "));
        Assert.True(double.Parse(generated.Split(' ')[1], System.Globalization.CultureInfo.InvariantCulture) >= 5, generated);
    }

    [Fact]
    public async Task Completion_has_openai_shape_and_greedy_is_deterministic()
    {
        var (status, body) = await f.Http.PostJson("/v1/completions", Completion("We the people", 24));
        Assert.Equal(200, status);
        Assert.Equal("text_completion", (string?)body["object"]);
        Assert.StartsWith("cmpl-", (string?)body["id"]);
        Assert.Equal("tiny-run/step_0000300", (string?)body["model"]);
        var choice = body["choices"]![0]!;
        Assert.Equal(0, (int)choice["index"]!);
        Assert.Equal("length", (string?)choice["finish_reason"]);
        var text = (string)choice["text"]!;
        Assert.Equal(24, Encoding.UTF8.GetByteCount(text)); // byte tokenizer: one token per byte
        Assert.Equal(13, (int)body["usage"]!["prompt_tokens"]!);
        Assert.Equal(24, (int)body["usage"]!["completion_tokens"]!);
        Assert.Equal(37, (int)body["usage"]!["total_tokens"]!);
        var (_, again) = await f.Http.PostJson("/v1/completions", Completion("We the people", 24));
        Assert.Equal(text, (string?)again["choices"]![0]!["text"]);
    }

    [Fact]
    public async Task Seeded_sampling_is_reproducible_and_n_gives_several_choices()
    {
        var req = Completion("The", 20, temperature: 1.0);
        req["seed"] = 5; req["n"] = 3; req["top_p"] = 0.9;
        var (s1, a) = await f.Http.PostJson("/v1/completions", req);
        var (_, b) = await f.Http.PostJson("/v1/completions", req.DeepClone());
        Assert.Equal(200, s1);
        Assert.Equal(3, a["choices"]!.AsArray().Count);
        Assert.Equal(new[] { 0, 1, 2 }, a["choices"]!.AsArray().Select(c => (int)c!["index"]!));
        Assert.Equal(a["choices"]!.ToJsonString(), b["choices"]!.ToJsonString());
    }

    [Fact]
    public async Task Streamed_completion_sends_openai_chunks_ending_with_done_and_equals_the_plain_answer()
    {
        var (_, plain) = await f.Http.PostJson("/v1/completions", Completion("The state of", 30));
        var (chunks, done, type) = await f.Http.PostStream("/v1/completions", Completion("The state of", 30, stream: true));
        Assert.Equal("text/event-stream", type);
        Assert.True(done, "no data: [DONE]");
        Assert.True(chunks.Count >= 10, $"only {chunks.Count} chunks: not streamed token by token");
        Assert.All(chunks, c => Assert.Equal("text_completion", (string?)c["object"]));
        Assert.Equal("length", (string?)chunks[^1]["choices"]![0]!["finish_reason"]);
        var text = string.Concat(chunks.Select(c => (string?)c["choices"]![0]!["text"]));
        Assert.Equal((string?)plain["choices"]![0]!["text"], text);
    }

    [Fact]
    public async Task Chat_uses_the_template_and_streams_deltas()
    {
        var req = new JsonObject
        {
            ["model"] = "tiny", ["max_tokens"] = 16, ["temperature"] = 0,
            ["messages"] = new JsonArray(new JsonObject { ["role"] = "system", ["content"] = "Be brief." }, new JsonObject { ["role"] = "user", ["content"] = "Hi" }),
        };
        var (status, body) = await f.Http.PostJson("/v1/chat/completions", req);
        Assert.Equal(200, status);
        Assert.Equal("chat.completion", (string?)body["object"]);
        var msg = body["choices"]![0]!["message"]!;
        Assert.Equal("assistant", (string?)msg["role"]);
        Assert.NotNull((string?)msg["content"]);
        // "System: Be brief.\n\nUser: Hi\n\nAssistant:" = 39 bytes
        Assert.Equal(39, (int)body["usage"]!["prompt_tokens"]!);

        req["stream"] = true;
        var (chunks, done, _) = await f.Http.PostStream("/v1/chat/completions", req);
        Assert.True(done);
        Assert.All(chunks, c => Assert.Equal("chat.completion.chunk", (string?)c["object"]));
        Assert.Equal("assistant", (string?)chunks[0]["choices"]![0]!["delta"]!["role"]);
        Assert.NotNull((string?)chunks[^1]["choices"]![0]!["finish_reason"]);
        var streamed = string.Concat(chunks.Select(c => (string?)c["choices"]![0]!["delta"]!["content"]));
        Assert.Equal((string?)msg["content"], streamed.Trim());
    }

    [Fact]
    public async Task Stop_sequences_cut_the_text_and_finish_with_stop()
    {
        var (_, full) = await f.Http.PostJson("/v1/completions", Completion("We the people", 30));
        var text = (string)full["choices"]![0]!["text"]!;
        var stop = text.Substring(8, 3);
        Assert.False(string.IsNullOrWhiteSpace(stop), $"the fixture model should write visible text, got '{text}'");
        var req = Completion("We the people", 30);
        req["stop"] = new JsonArray(stop, "zzzz");
        var (_, cut) = await f.Http.PostJson("/v1/completions", req);
        Assert.Equal(text[..text.IndexOf(stop, StringComparison.Ordinal)], (string?)cut["choices"]![0]!["text"]);
        Assert.Equal("stop", (string?)cut["choices"]![0]!["finish_reason"]);
        req["stream"] = true;
        var (chunks, _, _) = await f.Http.PostStream("/v1/completions", req);
        Assert.Equal((string?)cut["choices"]![0]!["text"], string.Concat(chunks.Select(c => (string?)c["choices"]![0]!["text"])));
    }

    [Fact]
    public async Task Embeddings_are_unit_vectors_of_the_model_width_and_deterministic()
    {
        var (status, body) = await f.Http.PostJson("/v1/embeddings", new JsonObject { ["model"] = "tiny", ["input"] = new JsonArray("union", "justice for all", "union") });
        Assert.Equal(200, status);
        Assert.Equal("list", (string?)body["object"]);
        var data = body["data"]!.AsArray();
        Assert.Equal(3, data.Count);
        var vecs = data.Select(d => d!["embedding"]!.AsArray().Select(x => (double)x!).ToArray()).ToArray();
        Assert.All(vecs, v => Assert.Equal(ServingFixture.Config.NEmbd, v.Length));
        Assert.All(vecs, v => Assert.InRange(Math.Sqrt(v.Sum(x => x * x)), 0.999, 1.001));
        Assert.All(vecs[0].Zip(vecs[2]), p => Assert.Equal(p.First, p.Second, 1e-5));
        Assert.NotEqual(vecs[0], vecs[1]);
        Assert.Equal(5 + 15 + 5, (int)body["usage"]!["prompt_tokens"]!);
    }

    [Fact]
    public async Task Search_returns_top_k_passages_with_scores_and_metadata()
    {
        var doc = ServingFixture.Docs[2];
        var (status, body) = await f.Http.PostJson("/v1/search", new JsonObject { ["query"] = doc.Text, ["top_k"] = 3 });
        Assert.Equal(200, status);
        var hits = body["data"]!.AsArray();
        Assert.Equal(3, hits.Count);
        Assert.Equal(doc.Text, (string?)hits[0]!["text"]);
        Assert.InRange((double)hits[0]!["score"]!, 0.9999, 1.0001);
        Assert.Equal(doc.Year, (string?)hits[0]!["metadata"]!["year"]);
        Assert.Equal(doc.Name, (string?)hits[0]!["metadata"]!["name"]);
        var scores = hits.Select(h => (double)h!["score"]!).ToArray();
        Assert.Equal(scores.OrderDescending(), scores);
    }

    [Theory]
    [InlineData("{\"prompt\": \"hi\", \"max_tokens\": 5", 400, null)]                                // malformed JSON
    [InlineData("[1, 2]", 400, null)]                                                                // not an object
    [InlineData("{\"prompt\": \"hi\", \"max_tokens\": \"five\"}", 400, "max_tokens")]              // wrong types
    [InlineData("{\"prompt\": \"hi\", \"temperature\": \"hot\"}", 400, "temperature")]
    [InlineData("{\"prompt\": \"hi\", \"stream\": \"yes\"}", 400, "stream")]
    [InlineData("{\"prompt\": \"hi\", \"n\": 1.5}", 400, "n")]
    [InlineData("{\"prompt\": \"hi\", \"stop\": 7}", 400, "stop")]
    [InlineData("{\"prompt\": 42}", 400, "prompt")]
    [InlineData("{\"max_tokens\": 4}", 400, "prompt")]                                               // missing prompt
    [InlineData("{\"prompt\": \"hi\", \"temperature\": 5}", 400, "temperature")]                    // out of range
    [InlineData("{\"prompt\": \"hi\", \"max_tokens\": 100000}", 400, "max_tokens")]                 // over the limit
    [InlineData("{\"prompt\": \"hi\", \"max_tokens\": 63}", 400, "max_tokens")]                     // prompt + max_tokens > context
    [InlineData("{\"prompt\": [300, 1]}", 400, "prompt")]                                            // token outside the vocabulary
    public async Task Bad_completion_requests_get_openai_errors(string json, int status, string? param)
    {
        var (s, body) = await f.Http.PostJson("/v1/completions", json);
        Http.AssertError(s, body, status, param);
    }

    [Fact]
    public async Task Prompt_longer_than_the_context_is_rejected_and_the_server_keeps_working()
    {
        var (s, body) = await f.Http.PostJson("/v1/completions", Completion(new string('a', 100), 1));
        Http.AssertError(s, body, 400, "prompt");
        Assert.Equal("context_length_exceeded", (string?)body["error"]!["code"]);
        var chat = new JsonObject { ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = new string('b', 80) }) };
        (s, body) = await f.Http.PostJson("/v1/chat/completions", chat);
        Http.AssertError(s, body, 400, "prompt");
        (s, body) = await f.Http.PostJson("/v1/chat/completions", new JsonObject { ["messages"] = new JsonArray(new JsonObject { ["role"] = "wizard", ["content"] = "x" }) });
        Http.AssertError(s, body, 400, "messages[0].role");
        (s, body) = await f.Http.PostJson("/v1/chat/completions", new JsonObject { ["messages"] = "hello" });
        Http.AssertError(s, body, 400, "messages");
        (s, body) = await f.Http.PostJson("/v1/embeddings", new JsonObject { ["input"] = 5 });
        Http.AssertError(s, body, 400, "input");
        (s, body) = await f.Http.PostJson("/v1/search", new JsonObject { ["query"] = "x", ["top_k"] = 0 });
        Http.AssertError(s, body, 400, "top_k");
        (s, _) = await f.Http.PostJson("/v1/completions", Completion("still alive", 3));
        Assert.Equal(200, s);
    }

    [Fact]
    public async Task Oversized_bodies_and_unknown_endpoints_are_rejected()
    {
        var huge = "{\"prompt\": \"" + new string('x', 2 << 20) + "\"}";
        // Expect: 100-continue lets the server refuse on Content-Length before the client uploads the body.
        using var req = new HttpRequestMessage(HttpMethod.Post, "/v1/completions") { Content = new StringContent(huge, Encoding.UTF8, "application/json") };
        req.Headers.ExpectContinue = true;
        using (var resp = await f.Http.SendAsync(req))
        {
            Assert.Equal(HttpStatusCode.RequestEntityTooLarge, resp.StatusCode);
            Assert.NotNull(JsonNode.Parse(await resp.Content.ReadAsStringAsync())!["error"]);
        }
        var (s, body) = await f.Http.PostJson("/v1/nothing", "{}");
        Http.AssertError(s, body, 404);
    }

    [Fact]
    public async Task Api_keys_are_required_when_configured()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir["keys"], "# keys\nsecret-1\nsecret-2\n");
        await using var server = await f.StartExtraAsync(new ServerOptions { ApiKeyFile = dir["keys"] });
        using var http = new HttpClient { BaseAddress = new Uri(server.Url) };
        var (s, body) = await http.PostJson("/v1/completions", Completion("x", 2));
        Http.AssertError(s, body, 401);
        (s, body) = await http.PostJson("/v1/completions", Completion("x", 2), key: "wrong");
        Http.AssertError(s, body, 401);
        Assert.Equal("invalid_api_key", (string?)body["error"]!["code"]);
        (s, _) = await http.PostJson("/v1/completions", Completion("x", 2), key: "secret-2");
        Assert.Equal(200, s);
        using var health = await http.GetAsync("/health");
        Assert.Equal(HttpStatusCode.OK, health.StatusCode);
    }

    [Fact]
    public async Task Too_many_concurrent_requests_get_429_and_the_rest_succeed()
    {
        await using var server = await f.StartExtraAsync(new ServerOptions { MaxBatch = 2, MaxQueue = 2, MaxConcurrentRequests = 3 });
        server.State.Model!.Scheduler.StepDelay = TimeSpan.FromMilliseconds(20);
        using var http = new HttpClient { BaseAddress = new Uri(server.Url) };
        var results = await Task.WhenAll(Enumerable.Range(0, 10).Select(_ => http.PostJson("/v1/completions", Completion("x", 20))));
        Assert.Contains(results, r => r.Status == 429);
        Assert.Contains(results, r => r.Status == 200);
        Assert.All(results.Where(r => r.Status == 429), r => Http.AssertError(r.Status, r.Body, 429));
        Assert.All(results, r => Assert.True(r.Status is 200 or 429, r.Body.ToJsonString()));
    }

    [Fact]
    public async Task Client_disconnect_cancels_generation()
    {
        await using var server = await f.StartExtraAsync(new ServerOptions());
        var sched = server.State.Model!.Scheduler;
        sched.StepDelay = TimeSpan.FromMilliseconds(50); // 60 tokens would take 3 s
        // A raw socket, closed after the first chunk (HttpClient would drain the response to reuse the connection).
        var uri = new Uri(server.Url);
        using (var tcp = new System.Net.Sockets.TcpClient())
        {
            await tcp.ConnectAsync(uri.Host, uri.Port);
            var stream = tcp.GetStream();
            var json = Completion("a", 60, stream: true).ToJsonString();
            var head = $"POST /v1/completions HTTP/1.1\r\nHost: {uri.Authority}\r\nContent-Type: application/json\r\nContent-Length: {Encoding.UTF8.GetByteCount(json)}\r\n\r\n{json}";
            await stream.WriteAsync(Encoding.UTF8.GetBytes(head));
            var buf = new byte[4096];
            var got = new StringBuilder();
            while (!got.ToString().Contains("data: ")) got.Append(Encoding.UTF8.GetString(buf, 0, await stream.ReadAsync(buf)));
            Assert.Contains("200 OK", got.ToString());
            Assert.True(sched.Active == 1 || SpinWait.SpinUntil(() => sched.Active == 1, 1000), "the sequence is not in the batch");
            tcp.Client.Close();
        }
        var until = DateTime.UtcNow.AddSeconds(2);
        while (sched.Active > 0 && DateTime.UtcNow < until) await Task.Delay(20);
        Assert.Equal(0, sched.Active);
        Assert.True(sched.TokensGenerated < 40, $"{sched.TokensGenerated} tokens generated after the client left");
    }

    [Fact]
    public async Task Dashboard_api_lists_runs_checkpoints_and_reads_metrics_incrementally()
    {
        var runs = (await f.Http.GetJson("/api/runs"))["runs"]!.AsArray();
        var run = runs.Single(r => (string?)r!["name"] == "tiny-run")!;
        Assert.Equal("finished", (string?)run["status"]);
        Assert.InRange((int)run["step"]!, 300, 301); // the browser test may have appended step 301
        var detail = await f.Http.GetJson("/api/runs/tiny-run");
        Assert.Equal(300, (int)detail["config"]!["options"]!["steps"]!);
        var cp = detail["checkpoints"]!.AsArray().Single()!;
        Assert.Equal(300, (int)cp["step"]!);
        Assert.NotNull(cp["val_loss"]);
        var m = await f.Http.GetJson("/api/runs/tiny-run/metrics?offset=0");
        var records = m["records"]!.AsArray();
        Assert.InRange(records.Count(r => (string?)r!["type"] == "train"), 300, 301); // (+1 the browser test may append)
        Assert.Equal(6, records.Count(r => (string?)r!["type"] == "eval"));        // every 50 steps
        Assert.Equal(3, records.Count(r => (string?)r!["type"] == "sample"));      // every 100 steps
        long offset = (long)m["offset"]!;
        Assert.Equal(new FileInfo(Path.Combine(f.RunDir, "metrics.jsonl")).Length, offset);
        var again = await f.Http.GetJson($"/api/runs/tiny-run/metrics?offset={offset}");
        Assert.Empty(again["records"]!.AsArray());
        var page = await f.Http.GetStringAsync("/");
        Assert.Contains("uPlot.iife.min.js", page);
        var lib = await f.Http.GetStringAsync("/static/vendor/uPlot.iife.min.js");
        Assert.Contains("uPlot", lib);
        Assert.DoesNotContain("https://", page); // no CDN
    }

    [Fact]
    public async Task Dashboard_only_server_serves_runs_and_says_there_is_no_model()
    {
        using var dir = new TempDir();
        var run = Path.Combine(dir.Path, "live");
        Directory.CreateDirectory(run);
        File.WriteAllText(Path.Combine(run, "config.json"), "{\"options\": {\"steps\": 100}}");
        File.WriteAllText(Path.Combine(run, "metrics.jsonl"), "{\"type\":\"train\",\"step\":1,\"loss\":5.0}\n{\"type\":\"train\",\"st");
        var dead = Path.Combine(dir.Path, "dead");
        Directory.CreateDirectory(dead);
        File.WriteAllText(Path.Combine(dead, "metrics.jsonl"), "{\"type\":\"train\",\"step\":3,\"loss\":5.0}\n");
        File.SetLastWriteTimeUtc(Path.Combine(dead, "metrics.jsonl"), DateTime.UtcNow.AddHours(-1));
        await using var server = await SuperclusterServer.StartAsync(new ServerOptions { RunsDir = dir.Path, Port = 0 });
        using var http = new HttpClient { BaseAddress = new Uri(server.Url) };
        var runs = (await http.GetJson("/api/runs"))["runs"]!.AsArray();
        Assert.Equal("running", (string?)runs.Single(r => (string?)r!["name"] == "live")!["status"]);
        Assert.Equal("failed", (string?)runs.Single(r => (string?)r!["name"] == "dead")!["status"]);
        var m = await http.GetJson("/api/runs/live/metrics?offset=0");
        Assert.Single(m["records"]!.AsArray()); // the half-written line waits
        long offset = (long)m["offset"]!;
        File.AppendAllText(Path.Combine(run, "metrics.jsonl"), "ep\":2,\"loss\":4.0}\n");
        var m2 = await http.GetJson($"/api/runs/live/metrics?offset={offset}");
        Assert.Equal(2, (int)m2["records"]![0]!["step"]!);
        var (s, body) = await http.PostJson("/v1/completions", Completion("x", 2));
        Http.AssertError(s, body, 503);
        using var missing = await http.GetAsync("/api/runs/nope");
        Assert.Equal(HttpStatusCode.NotFound, missing.StatusCode);
    }
}
