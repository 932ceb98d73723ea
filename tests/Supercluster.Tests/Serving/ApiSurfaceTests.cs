using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using Supercluster.Checkpointing;
using Supercluster.Inference;
using Supercluster.Server;
using Supercluster.Server.OpenAi;
using TorchSharp;
using static TorchSharp.torch;

namespace Supercluster.Tests.Serving;

/// <summary>
/// logprobs/top_logprobs/echo, penalties, logit_bias, seed, max_completion_tokens, stream_options, /tokenize and
/// /detokenize against the real server of <see cref="ServingFixture"/> (byte tokenizer: token id = byte), checked
/// against the model run directly.
/// </summary>
[Collection("Serving")]
public class ApiSurfaceTests(ServingFixture f)
{
    /// <summary>Token ids of a logprobs token string (byte tokenizer): "bytes:\xNN", one UTF-8 character, or end-of-text's text.</summary>
    static int[] Ids(string token) => token == EotText ? [Eot.EotToken] : token.StartsWith("bytes:")
        ? token[6..].Split("\\x", StringSplitOptions.RemoveEmptyEntries).Select(h => int.Parse(h, NumberStyles.HexNumber)).ToArray()
        : Encoding.UTF8.GetBytes(token).Select(b => (int)b).ToArray();

    static readonly Supercluster.Tokenization.ByteTokenizer Eot = new();
    static readonly string EotText = Eot.Decode([Eot.EotToken]);   // the model may rank end-of-text among the top tokens

    /// <summary>log_softmax of the model's logits over <paramref name="ids"/> [T, V], computed without the server (no KV cache, no batch).</summary>
    float[][] Reference(int[] ids)
    {
        var (model, _, _) = ModelCheckpoint.LoadForInference(f.Checkpoint, CPU);
        using (model)
        using (no_grad())
        using (NewDisposeScope())
        {
            var logits = model.Forward(tensor(ids.Select(i => (long)i).ToArray()).unsqueeze(0), null)[0].log_softmax(1);   // [T, V]
            return Enumerable.Range(0, ids.Length).Select(t => logits[t].data<float>().ToArray()).ToArray();
        }
    }

    // Tolerance 1e-5: the server decodes with a KV cache in a batch, the reference runs the whole sequence at once;
    // both are fp32 with the same ops, so they differ by float rounding only (observed ≤ 1e-6 on this model).
    const double Tol = 1e-5;

    [Fact]
    public async Task Completion_logprobs_with_echo_equal_log_softmax_of_the_models_logits()
    {
        const string prompt = "We the people";
        var (s, body) = await f.Http.PostJson("/v1/completions", new JsonObject
        {
            ["prompt"] = prompt, ["max_tokens"] = 12, ["temperature"] = 1, ["seed"] = 11, ["logprobs"] = 3, ["echo"] = true,
        });
        Assert.True(s == 200, body.ToJsonString());
        var choice = body["choices"]![0]!;
        var lp = choice["logprobs"]!;
        var tokens = lp["tokens"]!.AsArray().Select(t => Ids((string)t!).Single()).ToArray();
        Assert.Equal(prompt.Length + 12, tokens.Length);
        Assert.Equal(Encoding.UTF8.GetBytes(prompt).Select(b => (int)b), tokens[..prompt.Length]);
        Assert.StartsWith(prompt, (string)choice["text"]!);
        var reference = Reference(tokens);
        var values = lp["token_logprobs"]!.AsArray();
        Assert.Null(values[0]);                                      // nothing precedes the first prompt token
        Assert.Null(lp["top_logprobs"]![0]);
        for (int t = 1; t < tokens.Length; t++)
        {
            double expected = reference[t - 1][tokens[t]];
            Assert.True(Math.Abs((double)values[t]! - expected) <= Tol, $"token {t}: {(double)values[t]!} vs {expected}");
            // top_logprobs: the 3 likeliest tokens with their logprobs.
            var top = lp["top_logprobs"]![t]!.AsObject();
            Assert.Equal(3, top.Count);
            var best = reference[t - 1].Select((v, i) => (v, i)).OrderByDescending(x => x.v).Take(3).ToArray();
            foreach (var (v, i) in best)
            {
                var key = top.Select(kv => kv.Key).Single(k => Ids(k).SequenceEqual([i]));
                Assert.True(Math.Abs((double)top[key]! - v) <= Tol);
            }
        }
        // text_offset: where each token's text starts in the returned text (echo included).
        var offsets = lp["text_offset"]!.AsArray().Select(o => (int)o!).ToArray();
        Assert.Equal(0, offsets[0]);
        Assert.Equal(prompt.Length, offsets[prompt.Length]);
        Assert.True(offsets.Zip(offsets.Skip(1)).All(p => p.First <= p.Second));
    }

    [Fact]
    public async Task Chat_logprobs_streamed_or_not_equal_the_reference_and_each_other()
    {
        JsonObject Req(bool stream) => new()
        {
            ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "The union" }),
            ["max_tokens"] = 10, ["temperature"] = 0.8, ["seed"] = 4, ["logprobs"] = true, ["top_logprobs"] = 2, ["stream"] = stream,
            ["stop"] = new JsonArray("zzz"),
        };
        var (s, body) = await f.Http.PostJson("/v1/chat/completions", Req(false));
        Assert.True(s == 200, body.ToJsonString());
        var content = body["choices"]![0]!["logprobs"]!["content"]!.AsArray();
        var generated = content.Select(c => c!["bytes"]!.AsArray().Select(b => (int)b!).Single()).ToArray();
        var prompt = Encoding.UTF8.GetBytes(ChatTemplate.Render([("user", "The union")])).Select(b => (int)b).ToArray();
        var reference = Reference([.. prompt, .. generated]);
        for (int i = 0; i < generated.Length; i++)
        {
            var row = reference[prompt.Length - 1 + i];
            Assert.True(Math.Abs((double)content[i]!["logprob"]! - row[generated[i]]) <= Tol, $"token {i}");
            var top = content[i]!["top_logprobs"]!.AsArray();
            Assert.Equal(2, top.Count);
            Assert.Equal(row.Select((v, k) => (v, k)).OrderByDescending(x => x.v).First().k, top[0]!["bytes"]!.AsArray().Select(b => (int)b!).Single());
        }
        // The stream carries the same tokens and logprobs, chunk by chunk.
        var (chunks, done, _) = await f.Http.PostStream("/v1/chat/completions", Req(true));
        Assert.True(done);
        var streamed = chunks.SelectMany(c => c["choices"]!.AsArray()).Where(c => c!["logprobs"] is JsonObject)
            .SelectMany(c => c!["logprobs"]!["content"]!.AsArray()).ToArray();
        // Same tokens; logprobs equal within Tol, not bitwise: the second request's prompt may come from the prefix
        // cache, whose KV was computed in a forward of a different shape (fp32 rounding differs in the last digits).
        Assert.Equal(content.Select(c => (string)c!["token"]!), streamed.Select(c => (string)c!["token"]!));
        for (int i = 0; i < content.Count; i++)
            Assert.True(Math.Abs((double)content[i]!["logprob"]! - (double)streamed[i]!["logprob"]!) <= Tol, $"streamed token {i}");
    }

    [Fact]
    public void Penalties_and_bias_change_exactly_the_logits_they_should()
    {
        var logits = tensor(new float[] { 1, 2, 3, 4, 5 });
        var o = new SamplingOptions { FrequencyPenalty = 0.5, PresencePenalty = 0.25, LogitBias = new Dictionary<int, float> { [4] = -10, [0] = 3 } };
        var counts = new Dictionary<int, int> { [1] = 2, [3] = 1 };
        var got = LogitsProcessors.Apply(logits, o, counts).data<float>().ToArray();
        // logit − count·freq − (count > 0)·presence + bias
        Assert.Equal(new float[] { 1 + 3, 2 - 2 * 0.5f - 0.25f, 3, 4 - 0.5f - 0.25f, 5 - 10 }, got);
        Assert.Equal(new float[] { 1, 2, 3, 4, 5 }, logits.data<float>().ToArray());   // input untouched
        var masked = LogitsProcessors.Mask(logits, [1, 3]).data<float>().ToArray();
        Assert.Equal(new[] { float.NegativeInfinity, 2, float.NegativeInfinity, 4, float.NegativeInfinity }, masked);
    }

    [Fact]
    public async Task Penalised_greedy_decoding_matches_the_formula_applied_to_the_models_logits()
    {
        const string prompt = "The state of the";
        var (s, body) = await f.Http.PostJson("/v1/completions", new JsonObject
        {
            ["prompt"] = prompt, ["max_tokens"] = 16, ["temperature"] = 0, ["frequency_penalty"] = 1.5, ["presence_penalty"] = 0.5,
            ["logit_bias"] = new JsonObject { ["32"] = -3 },
        });
        Assert.True(s == 200, body.ToJsonString());
        var text = (string)body["choices"]![0]!["text"]!;
        // Reference: greedy over logit − count·1.5 − (count > 0)·0.5 (generated tokens only) − 3 for ' '.
        var ids = Encoding.UTF8.GetBytes(prompt).Select(b => (int)b).ToList();
        var counts = new Dictionary<int, int>();
        var expected = new List<byte>();
        for (int i = 0; i < 16; i++)
        {
            var row = Reference(ids.ToArray())[^1];
            var adjusted = row.Select((v, t) => (double)v - counts.GetValueOrDefault(t) * 1.5 - (counts.ContainsKey(t) ? 0.5 : 0) - (t == 32 ? 3 : 0)).ToArray();
            int next = Array.IndexOf(adjusted, adjusted.Max());
            if (next == 256) break;
            expected.Add((byte)next);
            ids.Add(next);
            counts[next] = counts.GetValueOrDefault(next) + 1;
        }
        Assert.Equal(Encoding.UTF8.GetString(expected.ToArray()), text);
        // Without the penalties greedy decoding differs (the tiny model repeats itself).
        var (_, plain) = await f.Http.PostJson("/v1/completions", new JsonObject { ["prompt"] = prompt, ["max_tokens"] = 16, ["temperature"] = 0 });
        Assert.NotEqual(text, (string)plain["choices"]![0]!["text"]!);
    }

    [Fact]
    public async Task Logit_bias_of_100_forces_a_token_and_minus_100_bans_one()
    {
        var (s, body) = await f.Http.PostJson("/v1/completions", new JsonObject
        {
            ["prompt"] = "The", ["max_tokens"] = 8, ["temperature"] = 1, ["logit_bias"] = new JsonObject { ["120"] = 100 },
        });
        Assert.True(s == 200, body.ToJsonString());
        Assert.Equal("xxxxxxxx", (string)body["choices"]![0]!["text"]!);
        var (_, greedy) = await f.Http.PostJson("/v1/completions", new JsonObject { ["prompt"] = "The", ["max_tokens"] = 8, ["temperature"] = 0 });
        var first = Encoding.UTF8.GetBytes((string)greedy["choices"]![0]!["text"]!)[0];
        (_, body) = await f.Http.PostJson("/v1/completions", new JsonObject
        {
            ["prompt"] = "The", ["max_tokens"] = 8, ["temperature"] = 0, ["logit_bias"] = new JsonObject { [first.ToString()] = -100 },
        });
        Assert.DoesNotContain((char)first, (string)body["choices"]![0]!["text"]!);
    }

    [Fact]
    public async Task Seeded_requests_repeat_exactly_alone_and_under_concurrent_load()
    {
        JsonObject Req(long? seed) => new()
        {
            ["prompt"] = "We the", ["max_tokens"] = 24, ["temperature"] = 1.2, ["seed"] = seed, ["presence_penalty"] = 0.3,
        };
        var (_, alone) = await f.Http.PostJson("/v1/completions", Req(99));
        string expected = (string)alone["choices"]![0]!["text"]!;
        // Eight seeded copies among eight unseeded requests, all at once: batch neighbours must not matter.
        var tasks = Enumerable.Range(0, 16).Select(i => f.Http.PostJson("/v1/completions", Req(i % 2 == 0 ? 99 : null))).ToArray();
        var results = await Task.WhenAll(tasks);
        for (int i = 0; i < 16; i += 2) Assert.Equal(expected, (string)results[i].Body["choices"]![0]!["text"]!);
        Assert.Contains(results.Where((_, i) => i % 2 == 1), r => (string)r.Body["choices"]![0]!["text"]! != expected);
    }

    [Fact]
    public async Task Stream_options_include_usage_sends_a_final_usage_chunk_with_no_choices()
    {
        var req = new JsonObject { ["prompt"] = "The union", ["max_tokens"] = 6, ["temperature"] = 0, ["stream"] = true, ["stream_options"] = new JsonObject { ["include_usage"] = true } };
        var (chunks, done, _) = await f.Http.PostStream("/v1/completions", req);
        Assert.True(done);
        var last = chunks[^1];
        Assert.Empty(last["choices"]!.AsArray());
        Assert.Equal(9, (int)last["usage"]!["prompt_tokens"]!);
        Assert.Equal(6, (int)last["usage"]!["completion_tokens"]!);
        Assert.Equal(15, (int)last["usage"]!["total_tokens"]!);
        Assert.All(chunks[..^1], c => Assert.Null(c["usage"]));
        // Chat too; without include_usage there is no such chunk.
        var chat = new JsonObject { ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "hi" }), ["max_completion_tokens"] = 3, ["stream"] = true, ["stream_options"] = new JsonObject { ["include_usage"] = true } };
        (chunks, _, _) = await f.Http.PostStream("/v1/chat/completions", chat);
        Assert.Empty(chunks[^1]["choices"]!.AsArray());
        Assert.True((int)chunks[^1]["usage"]!["completion_tokens"]! is > 0 and <= 3);
        req.Remove("stream_options");
        (chunks, _, _) = await f.Http.PostStream("/v1/completions", req);
        Assert.All(chunks, c => Assert.NotEmpty(c["choices"]!.AsArray()));
    }

    [Fact]
    public async Task Max_completion_tokens_wins_over_max_tokens_and_user_is_accepted()
    {
        var (s, body) = await f.Http.PostJson("/v1/chat/completions", new JsonObject
        {
            ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "hi" }),
            ["max_tokens"] = 9, ["max_completion_tokens"] = 2, ["temperature"] = 0, ["user"] = "u-7", ["logit_bias"] = new JsonObject { ["256"] = -100 },
        });
        Assert.True(s == 200, body.ToJsonString());
        Assert.Equal(2, (int)body["usage"]!["completion_tokens"]!);
        (s, body) = await f.Http.PostJson("/v1/chat/completions", new JsonObject
        {
            ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "hi" }), ["max_tokens"] = 2, ["max_completion_tokens"] = 100000,
        });
        Http.AssertError(s, body, 400, "max_completion_tokens");
    }

    [Theory]
    [InlineData("/v1/completions", "\"logprobs\": 21", "logprobs")]
    [InlineData("/v1/completions", "\"logprobs\": true", "logprobs")]
    [InlineData("/v1/completions", "\"echo\": 1", "echo")]
    [InlineData("/v1/completions", "\"presence_penalty\": 2.5", "presence_penalty")]
    [InlineData("/v1/completions", "\"frequency_penalty\": \"high\"", "frequency_penalty")]
    [InlineData("/v1/completions", "\"logit_bias\": {\"abc\": 1}", "logit_bias")]
    [InlineData("/v1/completions", "\"logit_bias\": {\"257\": 1}", "logit_bias")]
    [InlineData("/v1/completions", "\"logit_bias\": {\"5\": 101}", "logit_bias")]
    [InlineData("/v1/completions", "\"logit_bias\": [1]", "logit_bias")]
    [InlineData("/v1/completions", "\"seed\": 1.5", "seed")]
    [InlineData("/v1/completions", "\"stream_options\": {\"include_usage\": true}", "stream_options")]
    [InlineData("/v1/completions", "\"stream\": true, \"stream_options\": {\"include_usage\": 1}", "stream_options.include_usage")]
    [InlineData("/v1/completions", "\"stream\": true, \"stream_options\": {\"other\": true}", "stream_options.other")]
    [InlineData("/v1/completions", "\"response_format\": {\"type\": \"xml\"}", "response_format.type")]
    [InlineData("/v1/chat/completions", "\"logprobs\": 3", "logprobs")]
    [InlineData("/v1/chat/completions", "\"top_logprobs\": 2", "top_logprobs")]
    [InlineData("/v1/chat/completions", "\"logprobs\": true, \"top_logprobs\": -1", "top_logprobs")]
    [InlineData("/v1/chat/completions", "\"max_completion_tokens\": \"x\"", "max_completion_tokens")]
    [InlineData("/v1/chat/completions", "\"tool_choice\": \"required\"", "tool_choice")]
    [InlineData("/v1/chat/completions", "\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"a b\"}}]", "tools[0].function.name")]
    [InlineData("/v1/chat/completions", "\"tools\": [{\"type\": \"retrieval\"}]", "tools[0].type")]
    [InlineData("/v1/chat/completions", "\"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\"}}], \"tool_choice\": {\"type\": \"function\", \"function\": {\"name\": \"g\"}}", "tool_choice")]
    [InlineData("/v1/chat/completions", "\"response_format\": {\"type\": \"json_schema\", \"json_schema\": {\"name\": \"x\", \"schema\": {\"type\": \"string\", \"pattern\": \"a+\"}}}", "response_format.json_schema.schema")]
    [InlineData("/v1/chat/completions", "\"response_format\": {\"type\": \"json_schema\", \"json_schema\": {\"schema\": {}}}", "response_format.json_schema.name")]
    public async Task Bad_values_are_400s_naming_the_parameter(string path, string extra, string param)
    {
        var basic = path == "/v1/completions" ? "\"prompt\": \"x\", \"max_tokens\": 2" : "\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"max_tokens\": 2";
        var (s, body) = await f.Http.PostJson(path, $"{{{basic}, {extra}}}");
        Http.AssertError(s, body, 400, param);
    }

    [Fact]
    public async Task Tokenize_and_detokenize_round_trip_and_sit_behind_the_api_key()
    {
        var (s, body) = await f.Http.PostJson("/tokenize", new JsonObject { ["prompt"] = "Hi é" });
        Assert.True(s == 200, body.ToJsonString());
        Assert.Equal(new[] { 72, 105, 32, 0xC3, 0xA9 }, body["tokens"]!.AsArray().Select(t => (int)t!));
        Assert.Equal(5, (int)body["count"]!);
        Assert.Equal(64, (int)body["max_model_len"]!);
        (s, body) = await f.Http.PostJson("/detokenize", new JsonObject { ["tokens"] = new JsonArray(72, 105, 32, 0xC3, 0xA9) });
        Assert.Equal("Hi é", (string)body["prompt"]!);
        // messages: the chat template, as /v1/chat/completions renders it.
        (s, body) = await f.Http.PostJson("/tokenize", new JsonObject { ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "yo" }) });
        Assert.Equal(ChatTemplate.Render([("user", "yo")]).Length, (int)body["count"]!);
        (s, body) = await f.Http.PostJson("/detokenize", new JsonObject { ["tokens"] = new JsonArray(1, 300) });
        Http.AssertError(s, body, 400, "tokens");
        (s, body) = await f.Http.PostJson("/tokenize", new JsonObject { ["prompt"] = "a", ["messages"] = new JsonArray() });
        Http.AssertError(s, body, 400);

        using var dir = new TempDir();
        File.WriteAllText(dir["keys.txt"], "k-1\n");
        await using var guarded = await f.StartExtraAsync(new ServerOptions { ApiKeyFile = dir["keys.txt"] });
        using var http = new HttpClient { BaseAddress = new Uri(guarded.Url) };
        (s, body) = await http.PostJson("/tokenize", new JsonObject { ["prompt"] = "a" });
        Http.AssertError(s, body, 401);
        (s, body) = await http.PostJson("/detokenize", new JsonObject { ["tokens"] = new JsonArray(97) }, key: "k-1");
        Assert.Equal("a", (string)body["prompt"]!);
    }

    [Fact]
    public async Task Tool_calls_and_tool_results_are_rendered_by_the_chat_template()
    {
        // /tokenize renders messages exactly as /v1/chat/completions does; the byte tokenizer makes the text readable back.
        var messages = JsonNode.Parse("""
            [{"role":"user","content":"Weather in Oslo?"},
             {"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{ \"city\": \"Oslo\" }"}}]},
             {"role":"tool","tool_call_id":"call_1","content":"{\"temperature\":21}"}]
            """)!;
        var (s, body) = await f.Http.PostJson("/tokenize", new JsonObject { ["messages"] = messages });
        Assert.True(s == 200, body.ToJsonString());
        (s, body) = await f.Http.PostJson("/detokenize", new JsonObject { ["tokens"] = body["tokens"]!.DeepClone() });
        var text = (string)body["prompt"]!;
        Assert.Contains("Assistant: <tool_call>{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Oslo\"}}</tool_call>", text);
        Assert.Contains("Tool: {\"temperature\":21}", text);
        Assert.True(text.IndexOf("Tool: ") < text.LastIndexOf("Assistant:"), text); // the result comes before the turn the model continues
    }
}
