using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;
using Supercluster.Server;
using Supercluster.Tests.Reliability;

namespace Supercluster.Tests.Serving;

/// <summary>Per-key rate limits and graceful shutdown (queue-full 429 is in RobustnessTests).</summary>
[Collection("Serving")]
public class BackPressureTests(ServingFixture f)
{
    [Fact]
    public async Task Per_key_rate_limit_gives_429_naming_the_limit_with_retry_after_and_other_keys_pass()
    {
        string file = Path.Combine(f.Root, "limited-keys.txt");
        File.WriteAllLines(file, ["# key [requests per minute]", "slow-key 2", "free-key"]);
        await using var server = await f.StartExtraAsync(new ServerOptions { ApiKeyFile = file });
        using var http = new HttpClient { BaseAddress = new Uri(server.Url) };
        async Task<HttpResponseMessage> Models(string key)
        {
            using var req = new HttpRequestMessage(HttpMethod.Get, "/v1/models");
            req.Headers.Authorization = new AuthenticationHeaderValue("Bearer", key);
            return await http.SendAsync(req);
        }
        Assert.Equal(200, (int)(await Models("slow-key")).StatusCode);
        var (s, _) = await http.PostJson("/v1/completions", new JsonObject { ["prompt"] = "We", ["max_tokens"] = 2 }, key: "slow-key");
        Assert.Equal(200, s);
        using var third = await Models("slow-key");
        var body = JsonNode.Parse(await third.Content.ReadAsStringAsync())!;
        Http.AssertError((int)third.StatusCode, body, 429);
        Assert.Equal("rate_limit_exceeded", (string?)body["error"]!["code"]);
        Assert.Contains("2 requests per minute", (string)body["error"]!["message"]!);
        var after = third.Headers.RetryAfter?.Delta ?? TimeSpan.Zero;
        Assert.InRange(after.TotalSeconds, 1, 60);
        for (int i = 0; i < 5; i++) Assert.Equal(200, (int)(await Models("free-key")).StatusCode);
        Assert.Equal(401, (int)(await Models("other")).StatusCode);           // unknown keys are refused before any limit

        File.WriteAllLines(file, ["k1 many"]);
        var e = await Assert.ThrowsAsync<BadInputException>(() => f.StartExtraAsync(new ServerOptions { ApiKeyFile = file }));
        Assert.Contains("line 1", e.Message);
    }

    /// <summary>The real <c>serve</c> process: SIGTERM mid-stream lets the stream finish, refuses new requests with 503, exits 0.</summary>
    [Fact]
    public async Task Sigterm_drains_a_running_stream_to_completion_then_exits_0()
    {
        var lines = new ConcurrentQueue<string>();
        using var p = CliProcess.Start(lines.Enqueue, "serve", "--checkpoint", f.Checkpoint, "--port", "0", "--device", "cpu",
            "--step-delay-ms", "60", "--shutdown-timeout", "60");
        try
        {
            string? url = null;
            Assert.True(SpinWait.SpinUntil(() => p.HasExited || (url = lines.Select(l => l.Split("listening on ")).FirstOrDefault(x => x.Length == 2)?[1].Split(' ')[0]) is not null,
                TimeSpan.FromMinutes(2)), string.Join('\n', lines));
            Assert.False(p.HasExited, string.Join('\n', lines));
            using var http = new HttpClient { BaseAddress = new Uri(url!), Timeout = TimeSpan.FromMinutes(2) };
            var req = new JsonObject { ["prompt"] = "We the people", ["max_tokens"] = 40, ["temperature"] = 0, ["stream"] = true };
            using var msg = new HttpRequestMessage(HttpMethod.Post, "/v1/completions") { Content = new StringContent(req.ToJsonString(), Encoding.UTF8, "application/json") };
            using var resp = await http.SendAsync(msg, HttpCompletionOption.ResponseHeadersRead);
            Assert.Equal(200, (int)resp.StatusCode);
            using var reader = new StreamReader(await resp.Content.ReadAsStreamAsync());
            var events = new List<string>();
            while (await reader.ReadLineAsync() is { } line)                        // the stream is running: first text arrived
            {
                if (line.Length == 0) continue;
                events.Add(line);
                break;
            }

            Signals.Send(p, Signals.SIGTERM);
            Assert.True(SpinWait.SpinUntil(() => lines.Any(l => l.Contains("[serve] stopping")), TimeSpan.FromSeconds(30)), string.Join('\n', lines));
            var (status, refused) = await http.PostJson("/v1/completions", new JsonObject { ["prompt"] = "a", ["max_tokens"] = 2 });
            Http.AssertError(status, refused, 503);
            Assert.Equal("server_shutting_down", (string?)refused["error"]!["code"]);

            while (await reader.ReadLineAsync() is { } line) if (line.Length > 0) events.Add(line);
            Assert.Equal("data: [DONE]", events[^1]);
            var chunks = events[..^1].Select(e => JsonNode.Parse(e[6..])!).ToList();
            Assert.All(chunks, c => Assert.Null(c["error"]));
            Assert.Contains((string?)chunks[^1]["choices"]![0]!["finish_reason"], new[] { "length", "stop" });
            Assert.True(p.WaitForExit(TimeSpan.FromSeconds(60)), "serve did not exit after draining");
            p.WaitForExit();
            Assert.True(p.ExitCode == 0, $"exit {p.ExitCode}: {string.Join('\n', lines)}");
        }
        finally
        {
            if (!p.HasExited) p.Kill(entireProcessTree: true);
        }
    }
}
