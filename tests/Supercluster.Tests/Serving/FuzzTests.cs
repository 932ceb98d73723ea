using System.Globalization;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;
using CsCheck;
using Supercluster.Server;
using Xunit.Abstractions;

namespace Supercluster.Tests.Serving;

/// <summary>
/// The standing fuzz suite (issue 16): property-based requests (CsCheck) against every route of a real server, each
/// field set to random JSON values of every type, size and nesting, plus raw bytes, truncated bodies and odd content
/// types. Property: every answer is 200 (a stream then ends with [DONE] and carries no error) or an OpenAI-shaped 4xx,
/// never a 5xx; afterwards the server is up and answers a known request exactly as before. A fixed number of cases
/// per route keeps it bounded for CI; a failure prints the CsCheck seed that replays it.
/// </summary>
[Collection("Serving")]
public class FuzzTests(ServingFixture f, ITestOutputHelper output)
{
    /// <summary>150 per route by default (about 10 s here); SUPERCLUSTER_FUZZ_CASES=N runs a longer campaign.</summary>
    static readonly int CasesPerRoute = int.TryParse(Environment.GetEnvironmentVariable("SUPERCLUSTER_FUZZ_CASES"), out var n) && n > 0 ? n : 150;

    static readonly string[] FieldNames =
    [
        "model", "prompt", "max_tokens", "max_completion_tokens", "temperature", "top_p", "n", "stop", "seed", "stream", "echo",
        "messages", "input", "encoding_format", "query", "top_k", "user", "logprobs", "dimensions", "stream_options",
        "best_of", "logit_bias", "role", "content", "",
    ];

    /// <summary>A JSON string literal of <paramref name="s"/>, escaping everything outside printable ASCII (lone surrogates included).</summary>
    static string Quote(string s)
    {
        var b = new StringBuilder("\"");
        foreach (var c in s)
            b.Append(c is < ' ' or > '~' or '"' or '\\' ? $"\\u{(int)c:x4}" : c.ToString());
        return b.Append('"').ToString();
    }

    static readonly Gen<string> Strings = Gen.Frequency(
        (4, Gen.String[0, 24].Select(Quote)),                                           // any UTF-16, lone surrogates too
        (2, Gen.OneOfConst("", " ", "We the people", "gpt-nonexistent", "tiny", "float", "base64", "user", "system", "assistant", "\n\n", "\u00e9\u4e2d\ud83d\ude00").Select(Quote)),
        (1, Gen.Int[100, 3000].Select(n => Quote(new string('a', n)))),
        (1, Gen.Char['a', 'z'].Array[1, 8].Select(c => Quote(new string(c)))));

    static readonly Gen<string> Numbers = Gen.Frequency(
        (4, Gen.Int[-3, 80].Select(i => i.ToString(CultureInfo.InvariantCulture))),
        (2, Gen.Long.Select(l => l.ToString(CultureInfo.InvariantCulture))),
        (2, Gen.Double.Select(d => double.IsFinite(d) ? d.ToString("R", CultureInfo.InvariantCulture) : "1e400")),
        (2, Gen.OneOfConst("0", "-0", "1.5e-38", "1e-5", "2.0000001", "0.5", "1e308", "-1e308", "99999999999999999999999", "300", "256", "257", "1E2")));

    static readonly Gen<string> Scalars = Gen.Frequency(
        (1, Gen.OneOfConst("null", "true", "false")), (3, Numbers), (3, Strings));

    /// <summary>A random JSON value of depth at most <paramref name="depth"/>.</summary>
    static Gen<string> Value(int depth) => depth == 0 ? Scalars : Gen.Frequency(
        (5, Scalars),
        (2, Value(depth - 1).Array[0, 6].Select(xs => "[" + string.Join(",", xs) + "]")),
        (1, Gen.Select(Gen.OneOfConst(FieldNames), Value(depth - 1)).Array[0, 4]
            .Select(kv => "{" + string.Join(",", kv.Select(p => Quote(p.Item1) + ":" + p.Item2)) + "}")));

    static readonly Gen<string> AnyValue = Value(3);

    static readonly Gen<string> Message = Gen.Frequency(
        (3, Gen.Select(Gen.OneOfConst("system", "user", "assistant", "developer"), Strings, (r, c) => $"{{\"role\":{Quote(r)},\"content\":{c}}}")),
        (1, AnyValue));

    /// <summary>Valid request fields per route; the fuzzer starts from these and overwrites, adds or drops fields.</summary>
    static readonly Dictionary<string, Dictionary<string, Gen<string>>> Routes = new()
    {
        ["/v1/completions"] = new()
        {
            ["prompt"] = Gen.Frequency((3, Strings), (1, Gen.Int[0, 256].Array[0, 12].Select(a => "[" + string.Join(",", a) + "]")), (1, Strings.Array[1, 4].Select(a => "[" + string.Join(",", a) + "]"))),
            ["max_tokens"] = Gen.Int[0, 12].Select(i => i.ToString()), ["temperature"] = Gen.OneOfConst("0", "0.7", "1"),
            ["stream"] = Gen.OneOfConst("false", "true"), ["n"] = Gen.Int[1, 3].Select(i => i.ToString()), ["seed"] = Gen.Int.Select(i => i.ToString()),
        },
        ["/v1/chat/completions"] = new()
        {
            ["messages"] = Message.Array[1, 3].Select(a => "[" + string.Join(",", a) + "]"),
            ["max_tokens"] = Gen.Int[0, 12].Select(i => i.ToString()), ["stream"] = Gen.OneOfConst("false", "true"), ["top_p"] = Gen.OneOfConst("0.9", "1"),
        },
        ["/v1/embeddings"] = new()
        {
            ["input"] = Gen.Frequency((3, Strings), (1, Strings.Array[1, 6].Select(a => "[" + string.Join(",", a) + "]"))),
            ["encoding_format"] = Gen.OneOfConst("\"float\"", "\"base64\""),
        },
        ["/v1/search"] = new() { ["query"] = Strings, ["top_k"] = Gen.Int[1, 10].Select(i => i.ToString()) },
    };

    static string Clip(string s, int n) => s.Length > n ? s[..n] + "…" : s;

    sealed record Case(string Path, string ContentType, byte[] Body, string Shown);

    static Gen<Case> Requests(string path)
    {
        var fields = Routes[path];
        var valid = fields.Select(kv => kv.Value.Select(v => (kv.Key, v))).ToArray();
        var baseline = valid.Aggregate(Gen.Const(new List<(string, string)>()),
            (acc, g) => Gen.Select(acc, g, (l, x) => new List<(string, string)>(l) { x }));
        var edit = Gen.Select(Gen.Int[0, 2], Gen.OneOf(Gen.OneOfConst(FieldNames), Gen.String[0, 6]), AnyValue);
        var json = Gen.Select(baseline, edit.Array[0, 4], (b, edits) =>
        {
            var d = b.ToDictionary(x => x.Item1, x => x.Item2);
            foreach (var (op, name, value) in edits)
                if (op == 0) d.Remove(name); else d[name] = value;
            return "{" + string.Join(",", d.Select(kv => Quote(kv.Key) + ":" + kv.Value)) + "}";
        });
        var bytes = Gen.Frequency(
            (12, json.Select(j => Encoding.UTF8.GetBytes(j))),
            (1, Gen.Select(json, Gen.Int[0, 100], (j, cut) => Encoding.UTF8.GetBytes(j)[..(Encoding.UTF8.GetByteCount(j) * cut / 100)])),   // truncated
            (1, Gen.Byte.Array[0, 64]),                                                                                             // noise
            (1, Gen.Select(json, Gen.Byte.Array[1, 3], (j, junk) => Encoding.UTF8.GetBytes(j[..(j.Length / 2)]).Concat(junk).Concat(Encoding.UTF8.GetBytes(j[(j.Length / 2)..])).ToArray())),
            (1, AnyValue.Select(v => Encoding.UTF8.GetBytes(v))));                                                                // not an object
        var contentType = Gen.FrequencyConst((20, "application/json"), (1, "application/json; charset=utf-8"), (1, "text/plain"), (1, ""));
        return Gen.Select(bytes, contentType, (b, ct) => new Case(path, ct, b, $"{ct} {Clip(Encoding.UTF8.GetString(b), 400)}"));
    }

    static readonly Gen<string> GetPaths = Gen.Frequency(
        (1, Gen.OneOfConst("/v1/models", "/health", "/api/info", "/api/runs", "/", "/metrics", "/static/app.js", "/v1/completions", "/V1/Models", "/static/")),
        (2, Gen.String[0, 12].Select(s => "/api/runs/" + Uri.EscapeDataString(s))),
        (2, Gen.Select(Gen.OneOfConst("tiny-run", "..", "nope", "tiny-run/checkpoints"), Gen.OneOf(Gen.Long.Select(l => l.ToString()), Gen.String[0, 6].Select(Uri.EscapeDataString)),
            (n, o) => $"/api/runs/{n}/metrics?offset={o}")),
        (1, Gen.String[0, 12].Select(s => "/static/" + Uri.EscapeDataString(s))),
        (1, Gen.String[1, 12].Select(s => "/v1/" + Uri.EscapeDataString(s))));

    /// <summary>200 (a complete answer) or an OpenAI-shaped 4xx; anything else fails with the case shown.</summary>
    static async Task CheckAnswer(HttpResponseMessage resp, string shown)
    {
        int status = (int)resp.StatusCode;
        var text = await resp.Content.ReadAsStringAsync();
        var type = resp.Content.Headers.ContentType?.MediaType;
        if (status == 200)
        {
            if (type == "text/event-stream")
            {
                var events = text.Split("\n\n", StringSplitOptions.RemoveEmptyEntries);
                Assert.True(events.Length > 0 && events[^1] == "data: [DONE]", $"stream without [DONE] for {shown}: {text[..Math.Min(300, text.Length)]}");
                Assert.True(events.All(e => !e.Contains("\"error\"")), $"in-band error for {shown}: {text[..Math.Min(600, text.Length)]}");
            }
            else if (type == "application/json") JsonNode.Parse(text);
            return;
        }
        Assert.True(status is >= 400 and < 500, $"{status} for {shown}: {text[..Math.Min(600, text.Length)]}");
        var err = JsonNode.Parse(text)?["error"];
        Assert.True(err is JsonObject && err["message"] is JsonValue && err["type"] is JsonValue, $"{status} not in OpenAI's shape for {shown}: {text[..Math.Min(300, text.Length)]}");
    }

    [Fact]
    public async Task Every_route_answers_random_requests_with_200_or_an_openai_4xx_and_keeps_serving()
    {
        await using var server = await f.StartExtraAsync(new ServerOptions { Index = f.IndexPath, RunsDir = f.RunsDir });
        using var http = new HttpClient { BaseAddress = new Uri(server.Url), Timeout = TimeSpan.FromSeconds(60) };
        var known = new JsonObject { ["prompt"] = "We the people", ["max_tokens"] = 16, ["temperature"] = 0 };
        var (s0, before) = await http.PostJson("/v1/completions", known);
        Assert.Equal(200, s0);
        var (e0, embedBefore) = await http.PostJson("/v1/embeddings", new JsonObject { ["input"] = "union" });
        Assert.Equal(200, e0);

        var t0 = System.Diagnostics.Stopwatch.GetTimestamp();
        foreach (var path in Routes.Keys)
            await Requests(path).SampleAsync(async c =>
            {
                using var req = new HttpRequestMessage(HttpMethod.Post, c.Path) { Content = new ByteArrayContent(c.Body) };
                if (c.ContentType.Length > 0) req.Content.Headers.TryAddWithoutValidation("Content-Type", c.ContentType);
                using var resp = await http.SendAsync(req);
                await CheckAnswer(resp, $"POST {c.Path} {c.Shown}");
            }, iter: CasesPerRoute, threads: 1, print: c => $"POST {c.Path} {c.Shown}");
        await Gen.Select(Gen.FrequencyConst((6, "GET"), (1, "DELETE"), (1, "PUT"), (1, "PATCH"), (1, "OPTIONS")), GetPaths).SampleAsync(async (method, p) =>
        {
            using var resp = await http.SendAsync(new HttpRequestMessage(new HttpMethod(method), p));
            await CheckAnswer(resp, $"{method} {p}");
        }, iter: CasesPerRoute, threads: 1);
        output.WriteLine($"{Routes.Count * CasesPerRoute + CasesPerRoute} cases in {System.Diagnostics.Stopwatch.GetElapsedTime(t0).TotalSeconds:F1} s");

        // Still up, nothing stuck, and the same answers as before the fuzzing.
        var sched = server.State.Model!.Scheduler;
        Assert.True(SpinWait.SpinUntil(() => sched.Active == 0 && sched.QueueDepth == 0, 10000), "sequences left in the scheduler");
        var (s1, after) = await http.PostJson("/v1/completions", known);
        Assert.Equal(200, s1);
        Assert.Equal((string?)before["choices"]![0]!["text"], (string?)after["choices"]![0]!["text"]);
        var (e1, embedAfter) = await http.PostJson("/v1/embeddings", new JsonObject { ["input"] = "union" });
        Assert.Equal(200, e1);
        Assert.Equal(embedBefore["data"]!.ToJsonString(), embedAfter["data"]!.ToJsonString());
        Assert.Equal("ok", (string?)(await http.GetJson("/health"))["status"]);
    }
}
