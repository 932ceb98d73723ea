using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json.Nodes;
using Supercluster.Server;

namespace Supercluster.Tests.Serving;

/// <summary>Issue 16, items 1–4 and 9: keys on the matched endpoint, cross-site checks, the dashboard API, 500 bodies, connection limits.</summary>
[Collection("Serving")]
public class SecurityTests(ServingFixture f)
{
    static JsonObject Completion(string prompt = "We the people", int maxTokens = 4) => new()
    {
        ["prompt"] = prompt, ["max_tokens"] = maxTokens, ["temperature"] = 0,
    };

    static async Task<(int Status, string Body, HttpResponseMessage Response)> Send(HttpClient http, HttpMethod method, string path, string? body = null,
        string? contentType = "application/json", string? key = null, string? host = null, string? origin = null)
    {
        var req = new HttpRequestMessage(method, path);
        if (body is not null)
        {
            req.Content = new ByteArrayContent(Encoding.UTF8.GetBytes(body));
            if (contentType is not null) req.Content.Headers.TryAddWithoutValidation("Content-Type", contentType);
        }
        if (key is not null) req.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", key);
        if (host is not null) req.Headers.Host = host;
        if (origin is not null) req.Headers.Add("Origin", origin);
        var resp = await http.SendAsync(req);
        return ((int)resp.StatusCode, await resp.Content.ReadAsStringAsync(), resp);
    }

    static void AssertError(int status, string body, int expected, string? code = null)
    {
        Http.AssertError(status, JsonNode.Parse(body)!, expected);
        if (code is not null) Assert.Equal(code, (string?)JsonNode.Parse(body)!["error"]!["code"]);
    }

    [Fact]
    public async Task Upper_case_v1_paths_need_the_key_and_are_counted_as_their_endpoint()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir["keys"], "secret-1\n");
        await using var server = await f.StartExtraAsync(new ServerOptions { ApiKeyFile = dir["keys"] });
        using var http = new HttpClient { BaseAddress = new Uri(server.Url) };
        foreach (var path in new[] { "/V1/completions", "/v1/COMPLETIONS", "/V1/Completions" })
        {
            var (s, body, _) = await Send(http, HttpMethod.Post, path, Completion().ToJsonString());
            AssertError(s, body, 401, "invalid_api_key");
            (s, body, _) = await Send(http, HttpMethod.Post, path, Completion().ToJsonString(), key: "secret-1");
            Assert.True(s == 200, body);
        }
        var (ms, _, _) = await Send(http, HttpMethod.Get, "/V1/MODELS");
        Assert.Equal(401, ms);
        var metrics = await http.GetStringAsync("/metrics");
        Assert.Contains("supercluster_requests_total{endpoint=\"/v1/completions\",code=\"401\"} 3", metrics);
        Assert.Contains("supercluster_requests_total{endpoint=\"/v1/completions\",code=\"200\"} 3", metrics);
    }

    [Theory]
    [InlineData("text/plain")]
    [InlineData("text/plain; charset=utf-8")]
    [InlineData("application/x-www-form-urlencoded")]
    [InlineData("multipart/form-data; boundary=x")]
    [InlineData(null)]
    public async Task Bodies_that_a_cross_site_form_can_send_are_refused_with_415(string? contentType)
    {
        foreach (var path in new[] { "/v1/completions", "/v1/chat/completions", "/v1/embeddings", "/v1/search" })
        {
            var (s, body, _) = await Send(f.Http, HttpMethod.Post, path, Completion().ToJsonString(), contentType);
            AssertError(s, body, 415, "unsupported_media_type");
        }
        var (ok, okBody, _) = await Send(f.Http, HttpMethod.Post, "/v1/completions", Completion().ToJsonString(), "application/json; charset=utf-8");
        Assert.True(ok == 200, okBody);
    }

    [Fact]
    public async Task Foreign_hosts_and_origins_are_refused_unless_allowed()
    {
        var port = new Uri(f.Server.Url).Port;
        // DNS rebinding: a name that resolves to 127.0.0.1 arrives as its own Host header.
        foreach (var path in new[] { "/api/info", "/api/runs", "/v1/models", "/health" })
        {
            var (s, body, _) = await Send(f.Http, HttpMethod.Get, path, host: $"rebind.example:{port}");
            AssertError(s, body, 403, "host_not_allowed");
        }
        foreach (var host in new[] { $"localhost:{port}", $"127.0.0.1:{port}", "127.0.0.1" })
        {
            var (s, body, _) = await Send(f.Http, HttpMethod.Get, "/api/runs", host: host);
            Assert.True(s == 200, $"{host}: {body}");
        }
        // A page elsewhere posting to us (fetch sends its Origin).
        var (cs, cbody, _) = await Send(f.Http, HttpMethod.Post, "/v1/completions", Completion().ToJsonString(), origin: "http://evil.example");
        AssertError(cs, cbody, 403, "origin_not_allowed");
        (cs, cbody, _) = await Send(f.Http, HttpMethod.Post, "/v1/completions", Completion().ToJsonString(), origin: "null");
        AssertError(cs, cbody, 403, "origin_not_allowed");
        (cs, cbody, _) = await Send(f.Http, HttpMethod.Post, "/v1/completions", Completion().ToJsonString(), origin: $"http://127.0.0.1:{port + 1}");
        AssertError(cs, cbody, 403, "origin_not_allowed");
        // The dashboard itself (same origin) is fine.
        (cs, cbody, _) = await Send(f.Http, HttpMethod.Post, "/v1/completions", Completion().ToJsonString(), origin: f.Server.Url);
        Assert.True(cs == 200, cbody);

        await using var open = await f.StartExtraAsync(new ServerOptions { AllowedHosts = ["models.internal"], AllowedOrigins = ["https://app.example"] });
        using var http = new HttpClient { BaseAddress = new Uri(open.Url) };
        var (hs, hbody, _) = await Send(http, HttpMethod.Get, "/v1/models", host: "models.internal");
        Assert.True(hs == 200, hbody);
        (hs, hbody, _) = await Send(http, HttpMethod.Post, "/v1/completions", Completion().ToJsonString(), origin: "https://app.example");
        Assert.True(hs == 200, hbody);
        (hs, hbody, _) = await Send(http, HttpMethod.Get, "/v1/models", host: "other.internal");
        AssertError(hs, hbody, 403, "host_not_allowed");
    }

    [Fact]
    public async Task Dashboard_api_needs_the_key_and_never_shows_absolute_paths()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir["keys"], "dash-key\n");
        await using var server = await f.StartExtraAsync(new ServerOptions { ApiKeyFile = dir["keys"], RunsDir = f.RunsDir });
        using var http = new HttpClient { BaseAddress = new Uri(server.Url) };
        foreach (var path in new[] { "/api/info", "/api/runs", "/api/runs/tiny-run", "/api/runs/tiny-run/metrics?offset=0", "/API/RUNS" })
        {
            var (s, body, _) = await Send(http, HttpMethod.Get, path);
            AssertError(s, body, 401, "invalid_api_key");
        }
        foreach (var path in new[] { "/api/info", "/api/runs", "/api/runs/tiny-run" })
        {
            var (s, body, _) = await Send(http, HttpMethod.Get, path, key: "dash-key");
            Assert.True(s == 200, body);
            Assert.DoesNotContain(f.Root, body);
            Assert.DoesNotContain(Path.GetTempPath().TrimEnd('/'), body);
        }
        var (ds, detail, _) = await Send(http, HttpMethod.Get, "/api/runs/tiny-run", key: "dash-key");
        Assert.Equal(200, ds);
        Assert.Equal(300, (int)JsonNode.Parse(detail)!["config"]!["options"]!["steps"]!);
        // The page itself is public (it holds no data) and asks for the key.
        var (ps, page, _) = await Send(http, HttpMethod.Get, "/");
        Assert.Equal(200, ps);
        Assert.Contains("api-key", page);
    }

    [Fact]
    public async Task Internal_errors_answer_a_generic_500_with_a_request_id_and_log_the_details()
    {
        var log = new System.Collections.Concurrent.ConcurrentQueue<string>();
        await using var server = await SuperclusterServer.StartAsync(new ServerOptions { Checkpoint = f.Checkpoint, Port = 0 }, log.Enqueue);
        using var http = new HttpClient { BaseAddress = new Uri(server.Url) };
        server.State.Model!.Model.Dispose();   // a real failure inside libtorch/TorchSharp on the next forward
        var (s, body, resp) = await Send(http, HttpMethod.Post, "/v1/embeddings", new JsonObject { ["input"] = "union" }.ToJsonString());
        AssertError(s, body, 500, "internal_error");
        var id = resp.Headers.GetValues("X-Request-Id").Single();
        var message = (string)JsonNode.Parse(body)!["error"]!["message"]!;
        Assert.Contains(id, message);
        Assert.Equal($"internal error (request id {id}); the details are in the server log", message);
        var logged = log.Single(l => l.Contains(id));
        Assert.Contains("Exception", logged);   // the type and stack went to the log, not to the client
    }

    [Fact]
    public async Task Half_sent_bodies_hold_no_in_flight_slot()
    {
        await using var server = await f.StartExtraAsync(new ServerOptions { MaxConcurrentRequests = 2 });
        var uri = new Uri(server.Url);
        var json = Encoding.UTF8.GetBytes(Completion("x", 2).ToJsonString());
        var slow = new List<TcpClient>();
        try
        {
            for (int i = 0; i < 4; i++)
            {
                var tcp = new TcpClient();
                slow.Add(tcp);
                await tcp.ConnectAsync(uri.Host, uri.Port);
                var stream = tcp.GetStream();
                var head = $"POST /v1/completions HTTP/1.1\r\nHost: {uri.Authority}\r\nContent-Type: application/json\r\nContent-Length: {json.Length}\r\nExpect: 100-continue\r\n\r\n";
                await stream.WriteAsync(Encoding.ASCII.GetBytes(head));
                // "100 Continue" comes when the server starts reading the body: past the point where the slot used to be taken.
                Assert.Contains("100 Continue", await ReadSome(stream));
                await stream.WriteAsync(json.AsMemory(0, json.Length / 2));
            }
            var (s, body) = await new HttpClient { BaseAddress = uri }.PostJson("/v1/completions", Completion("y", 2));
            Assert.True(s == 200, body.ToJsonString());
            // A slow client that finishes its body is served too.
            var last = slow[0].GetStream();
            await last.WriteAsync(json.AsMemory(json.Length / 2));
            Assert.Contains("200 OK", await ReadSome(last));
        }
        finally { foreach (var t in slow) t.Dispose(); }
    }

    [Fact]
    public async Task Connections_over_the_per_client_limit_get_429_and_the_limit_frees_on_close()
    {
        await using var server = await f.StartExtraAsync(new ServerOptions { MaxConnectionsPerClient = 2 });
        var uri = new Uri(server.Url);
        var get = Encoding.ASCII.GetBytes($"GET /health HTTP/1.1\r\nHost: {uri.Authority}\r\n\r\n");
        var held = new List<TcpClient>();
        try
        {
            for (int i = 0; i < 2; i++)
            {
                var tcp = new TcpClient();
                held.Add(tcp);
                await tcp.ConnectAsync(uri.Host, uri.Port);
                await tcp.GetStream().WriteAsync(get);
                Assert.Contains("200 OK", await ReadSome(tcp.GetStream()));   // served and kept alive
            }
            using (var third = new TcpClient())
            {
                await third.ConnectAsync(uri.Host, uri.Port);
                await third.GetStream().WriteAsync(get);
                var answer = await ReadSome(third.GetStream());
                Assert.Contains("429", answer);
                Assert.Contains("Retry-After: 1", answer);
                Assert.Contains("rate_limit_exceeded", answer);
            }
            held[0].Dispose();
            // The server sees the close asynchronously: retry until a new connection is accepted (bounded).
            string again = "";
            for (int attempt = 0; attempt < 50 && !again.Contains("200 OK"); attempt++)
            {
                using var next = new TcpClient();
                await next.ConnectAsync(uri.Host, uri.Port);
                await next.GetStream().WriteAsync(get);
                again = await ReadSome(next.GetStream());
                if (!again.Contains("200 OK")) await Task.Delay(100);
            }
            Assert.Contains("200 OK", again);
        }
        finally { foreach (var t in held) t.Dispose(); }
    }

    /// <summary>What the server sends next (up to one read of 8 KiB, waiting at most 10 s).</summary>
    internal static async Task<string> ReadSome(NetworkStream stream)
    {
        var buf = new byte[8192];
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        int n = await stream.ReadAsync(buf, cts.Token);
        return Encoding.UTF8.GetString(buf, 0, n);
    }
}
