using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using Json.Schema;
using Supercluster.Checkpointing;
using Supercluster.Model;
using Supercluster.Runtime;
using Supercluster.Server;

namespace Supercluster.Tests.Serving;

/// <summary>
/// A server on an untrained byte-level model with a long context: its near-uniform next-token distribution at
/// temperature 1 writes random bytes, the hardest test of the constraint (quotes, escapes, broken UTF-8, endless
/// strings and numbers until the budget forces the value closed).
/// </summary>
public sealed class RandomModelServer : IAsyncLifetime
{
    readonly TempDir _dir = new();
    public SuperclusterServer Server { get; private set; } = null!;
    public HttpClient Http { get; private set; } = null!;
    /// <summary>The server's log lines: a 500's details (its exception) are here, not in the response.</summary>
    public System.Collections.Concurrent.ConcurrentQueue<string> Log { get; } = new();

    public async Task InitializeAsync()
    {
        TorchSetup.Init();
        var config = TorchSetup.TinyGpt2(vocab: 257, ctx: 1024) with { NEmbd = 32, NHead = 4, NKvHead = 4, FfnHidden = 64 };
        using (var model = CausalLM.Create(config, seed: 5))
            new CheckpointStore(_dir["run"]).Save(0, d => ModelCheckpoint.WriteModel(d, model, "byte"));
        Server = await SuperclusterServer.StartAsync(new ServerOptions { Checkpoint = _dir["run"], Port = 0, ModelName = "random" }, Log.Enqueue);
        Http = new HttpClient { BaseAddress = new Uri(Server.Url), Timeout = TimeSpan.FromSeconds(120) };
    }

    public async Task DisposeAsync()
    {
        Http.Dispose();
        await Server.DisposeAsync();
        _dir.Dispose();
    }
}

public class StructuredOutputTests(RandomModelServer f) : IClassFixture<RandomModelServer>
{
    const string PersonSchema = """
        {"type": "object", "additionalProperties": false, "required": ["name", "age", "ok", "address", "tags"],
         "properties": {
           "name": {"type": "string", "maxLength": 12, "description": "ignored"},
           "age": {"type": "integer"},
           "score": {"type": "number"},
           "ok": {"type": "boolean"},
           "nick": {"type": ["string", "null"]},
           "kind": {"enum": ["a", "b", 3, null]},
           "version": {"const": "v1"},
           "address": {"type": "object", "additionalProperties": false, "required": ["city"],
                       "properties": {"city": {"type": "string", "minLength": 1}, "zip": {"anyOf": [{"type": "string"}, {"type": "integer"}]}}},
           "tags": {"type": "array", "items": {"type": "string", "enum": ["x", "y"]}, "maxItems": 3},
           "extra": {}
         }}
        """;

    /// <summary>Samples <paramref name="total"/> completions (n = 8 per request, 4 requests at a time).</summary>
    async Task<List<string>> Sample(JsonObject responseFormat, int total, int maxTokens)
    {
        var outputs = new List<string>();
        for (int batch = 0; batch < total; batch += 32)
        {
            var tasks = Enumerable.Range(0, Math.Min(4, (total - batch + 7) / 8)).Select(k => f.Http.PostJson("/v1/completions", new JsonObject
            {
                ["prompt"] = "Output:", ["max_tokens"] = maxTokens, ["temperature"] = 1, ["n"] = 8, ["seed"] = batch + k * 8,
                ["response_format"] = responseFormat.DeepClone(),
            }));
            foreach (var (s, body) in await Task.WhenAll(tasks))
            {
                Assert.True(s == 200, body.ToJsonString());
                outputs.AddRange(body["choices"]!.AsArray().Select(c => (string)c!["text"]!));
            }
        }
        return outputs.Take(total).ToList();
    }

    [Fact]
    public async Task Json_schema_outputs_always_parse_and_validate()
    {
        var format = new JsonObject
        {
            ["type"] = "json_schema",
            ["json_schema"] = new JsonObject { ["name"] = "person", ["strict"] = true, ["schema"] = JsonNode.Parse(PersonSchema) },
        };
        var schema = JsonSchema.FromText(PersonSchema);
        var outputs = await Sample(format, 104, 90);
        Assert.Equal(104, outputs.Count);
        foreach (var text in outputs)
        {
            using var doc = JsonDocument.Parse(text);   // throws on anything that is not JSON
            var result = schema.Evaluate(doc.RootElement);
            Assert.True(result.IsValid, $"does not validate: {text}");
        }
        // The samples differ (the mask constrains, it does not decide).
        Assert.True(outputs.Distinct().Count() > 90, string.Join("\n", outputs.Take(5)));
    }

    [Fact]
    public async Task Json_object_outputs_always_parse_as_objects()
    {
        var outputs = await Sample(new JsonObject { ["type"] = "json_object" }, 56, 64);
        foreach (var text in outputs)
            Assert.True(JsonNode.Parse(text) is JsonObject, text);
        Assert.Contains(outputs, o => o.Length > 2);   // not only "{}"
    }

    [Fact]
    public async Task Chat_json_mode_message_content_parses_and_unsupported_keywords_are_named()
    {
        var (s, body) = await f.Http.PostJson("/v1/chat/completions", new JsonObject
        {
            ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "JSON please" }),
            ["max_tokens"] = 40, ["temperature"] = 1, ["n"] = 4, ["response_format"] = new JsonObject { ["type"] = "json_object" },
        });
        Assert.True(s == 200, body.ToJsonString() + "\n" + string.Join("\n", f.Log.Where(l => l.StartsWith("error"))));
        foreach (var c in body["choices"]!.AsArray())
            Assert.True(JsonNode.Parse((string)c!["message"]!["content"]!) is JsonObject);
        foreach (var (schema, keyword) in new[] { ("{\"type\":\"integer\",\"minimum\":3}", "minimum"), ("{\"properties\":{\"a\":{\"$ref\":\"#/x\"}}}", "$ref"), ("{\"type\":\"string\",\"format\":\"date\"}", "format") })
        {
            (s, body) = await f.Http.PostJson("/v1/completions", new JsonObject
            {
                ["prompt"] = "x", ["max_tokens"] = 20,
                ["response_format"] = new JsonObject { ["type"] = "json_schema", ["json_schema"] = new JsonObject { ["name"] = "s", ["schema"] = JsonNode.Parse(schema) } },
            });
            Http.AssertError(s, body, 400, "response_format.json_schema.schema");
            Assert.Contains($"'{keyword}'", (string)body["error"]!["message"]!);
        }
        // A budget too small for the shortest valid output is refused, not answered with broken JSON.
        (s, body) = await f.Http.PostJson("/v1/completions", new JsonObject
        {
            ["prompt"] = "x", ["max_tokens"] = 5,
            ["response_format"] = new JsonObject { ["type"] = "json_schema", ["json_schema"] = new JsonObject { ["name"] = "s", ["schema"] = JsonNode.Parse(PersonSchema) } },
        });
        Http.AssertError(s, body, 400, "max_tokens");
    }

    static JsonArray Tools() => new(
        new JsonObject
        {
            ["type"] = "function",
            ["function"] = new JsonObject
            {
                ["name"] = "get_weather", ["description"] = "Weather in a city",
                ["parameters"] = JsonNode.Parse("""{"type":"object","properties":{"city":{"type":"string","maxLength":10},"unit":{"enum":["c","f"]}},"required":["city","unit"],"additionalProperties":false}"""),
            },
        },
        new JsonObject { ["type"] = "function", ["function"] = new JsonObject { ["name"] = "now" } });

    [Fact]
    public async Task Tool_choice_required_named_auto_and_none_follow_the_rule()
    {
        var argsSchema = JsonSchema.FromText(Tools()[0]!["function"]!["parameters"]!.ToJsonString());
        JsonObject Req(JsonNode choice, int maxTokens = 100) => new()
        {
            ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "Weather in Oslo?" }),
            ["tools"] = Tools(), ["tool_choice"] = choice, ["max_tokens"] = maxTokens, ["temperature"] = 1, ["n"] = 4,
        };
        var (s, body) = await f.Http.PostJson("/v1/chat/completions", Req(new JsonObject { ["type"] = "function", ["function"] = new JsonObject { ["name"] = "get_weather" } }));
        Assert.True(s == 200, body.ToJsonString());
        foreach (var c in body["choices"]!.AsArray())
        {
            Assert.Equal("tool_calls", (string?)c!["finish_reason"]);
            Assert.Null(c["message"]!["content"]);
            var call = c["message"]!["tool_calls"]![0]!;
            Assert.Equal("function", (string?)call["type"]);
            Assert.StartsWith("call_", (string?)call["id"]);
            Assert.Equal("get_weather", (string?)call["function"]!["name"]);
            using var args = JsonDocument.Parse((string)call["function"]!["arguments"]!);
            Assert.True(argsSchema.Evaluate(args.RootElement).IsValid, args.RootElement.GetRawText());
        }
        (s, body) = await f.Http.PostJson("/v1/chat/completions", Req("required"));
        Assert.All(body["choices"]!.AsArray(), c => Assert.Contains((string)c!["message"]!["tool_calls"]![0]!["function"]!["name"]!, new[] { "get_weather", "now" }));
        // none: never a call; auto: an untrained model almost never writes the marker, so plain text (the rule decides).
        foreach (var choice in new[] { "none", "auto" })
        {
            (s, body) = await f.Http.PostJson("/v1/chat/completions", Req(choice, 24));
            Assert.True(s == 200, body.ToJsonString());
            foreach (var c in body["choices"]!.AsArray())
            {
                var content = (string?)c!["message"]!["content"];
                if (c["message"]!["tool_calls"] is null) Assert.False(content!.StartsWith("<tool_call>"), content);
                else Assert.Equal("auto", choice);
            }
        }
    }

    [Fact]
    public async Task Openai_npm_client_does_a_tool_call_round_trip()
    {
        var package = NpmAssets.GetPackage("openai", "6.30.1");
        using var dir = new TempDir();
        var script = dir["roundtrip.mjs"];
        File.WriteAllText(script, $$"""
            import OpenAI from {{JsonSerializer.Serialize(Path.Combine(package, "index.mjs"))}};
            const client = new OpenAI({ baseURL: process.env.BASE_URL + "/v1", apiKey: "none", maxRetries: 0 });
            const tools = {{Tools().ToJsonString()}};
            const messages = [{ role: "user", content: "Weather in Oslo?" }];
            const first = await client.chat.completions.create({ model: "random", messages, tools, tool_choice: "required", max_tokens: 100, seed: 3 });
            const call = first.choices[0].message.tool_calls[0];
            messages.push(first.choices[0].message);
            messages.push({ role: "tool", tool_call_id: call.id, content: JSON.stringify({ temperature: 21 }) });
            const second = await client.chat.completions.create({ model: "random", messages, tools, max_tokens: 8, temperature: 0 });
            const stream = await client.chat.completions.create({ model: "random", messages: messages.slice(0, 1), tools,
                tool_choice: { type: "function", function: { name: "get_weather" } }, max_tokens: 100, stream: true, stream_options: { include_usage: true } });
            let streamed = { name: "", arguments: "" }, finish = null, usage = null;
            for await (const chunk of stream) {
              if (chunk.usage) usage = chunk.usage;
              for (const c of chunk.choices) {
                for (const t of c.delta.tool_calls ?? []) { streamed.name += t.function?.name ?? ""; streamed.arguments += t.function?.arguments ?? ""; }
                if (c.finish_reason) finish = c.finish_reason;
              }
            }
            console.log(JSON.stringify({ finish: first.choices[0].finish_reason, call, second: second.choices[0], streamed, streamFinish: finish, usage }));
            """);
        var psi = new ProcessStartInfo("node", [script]) { RedirectStandardOutput = true, RedirectStandardError = true };
        psi.Environment["BASE_URL"] = f.Server.Url;
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        Assert.True(p.WaitForExit(120_000), "node did not finish");
        Assert.True(p.ExitCode == 0, await stderr);
        var r = JsonNode.Parse((await stdout).Trim().Split('\n')[^1])!;
        Assert.Equal("tool_calls", (string?)r["finish"]);
        var args = JsonNode.Parse((string)r["call"]!["function"]!["arguments"]!)!;
        Assert.Contains((string)r["call"]!["function"]!["name"]!, new[] { "get_weather", "now" });
        Assert.True(args is JsonObject);
        Assert.Equal("assistant", (string?)r["second"]!["message"]!["role"]);
        Assert.Equal("get_weather", (string?)r["streamed"]!["name"]);
        var streamedArgs = JsonNode.Parse((string)r["streamed"]!["arguments"]!)!;
        Assert.Contains((string)streamedArgs["unit"]!, new[] { "c", "f" });
        Assert.Equal("tool_calls", (string?)r["streamFinish"]);
        Assert.True((int)r["usage"]!["completion_tokens"]! > 0);
    }
}
