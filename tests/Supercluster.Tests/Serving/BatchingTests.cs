using System.Diagnostics;
using System.Text.Json.Nodes;
using Supercluster.Inference;
using Supercluster.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace Supercluster.Tests.Serving;

[Collection("Serving")]
public class BatchingTests(ServingFixture f)
{
    static readonly string[] Prompts =
    [
        "We", "The state of the union", "in order to form", "justice", "a more perfect union, establish", "provide for the",
        "T", "domestic tranquility", "United States", "promote the general welfare. The", "people", "is strong. We the",
        "common defence", "insure", "form a more", "the",
    ];

    static JsonObject Greedy(string prompt) => new() { ["prompt"] = prompt, ["max_tokens"] = 30, ["temperature"] = 0 };

    [Fact]
    public async Task Concurrent_greedy_requests_give_exactly_the_one_at_a_time_outputs_and_are_batched()
    {
        var sched = f.Server.State.Model!.Scheduler;
        var sequential = new List<string>();
        foreach (var p in Prompts)
        {
            var (s, body) = await f.Http.PostJson("/v1/completions", Greedy(p));
            Assert.Equal(200, s);
            sequential.Add((string)body["choices"]![0]!["text"]!);
        }
        long steps0 = sched.DecodeSteps;
        var concurrent = await Task.WhenAll(Prompts.Select(p => f.Http.PostJson("/v1/completions", Greedy(p))));
        long steps = sched.DecodeSteps - steps0;
        for (int i = 0; i < Prompts.Length; i++)
            Assert.True(sequential[i] == (string?)concurrent[i].Body["choices"]![0]!["text"], $"prompt {i} '{Prompts[i]}': '{sequential[i]}' vs '{concurrent[i].Body["choices"]![0]!["text"]}'");
        // 16 × 29 decode tokens one at a time would be 464 steps; batched they share steps.
        // (Batching's speed-up is measured by scripts/bench-serve.py, not asserted here: timed unit tests are flaky.)
        Assert.True(steps < 464 / 3, $"{steps} decode steps for 16 concurrent requests: not batched");
    }

    [Theory]
    [InlineData(ModelFamily.Gpt2)]
    [InlineData(ModelFamily.Llama)]
    public async Task Scheduler_matches_the_single_sequence_sampler_for_both_families(ModelFamily family)
    {
        TorchSetup.Init();
        var config = family == ModelFamily.Gpt2 ? TorchSetup.TinyGpt2(vocab: 40, ctx: 48) : TorchSetup.TinyLlama(vocab: 40, ctx: 48);
        using var model = CausalLM.Create(config, seed: 3);
        model.to(ScalarType.Float64); // rounding differences between the two attention paths stay far below argmax margins
        model.eval();
        int[][] prompts = [[1], [2, 3, 4, 5, 6, 7], [8, 9], [10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20], [5, 5, 5]];
        var o = new SamplingOptions { MaxNewTokens = 25, Temperature = 0 };
        var expected = prompts.Select(p => Sampler.Generate(model, p, o, CPU)[p.Length..]).ToArray();
        using var sched = new BatchScheduler(model, CPU, maxBatch: 4, maxQueue: 10);
        var handles = prompts.Select(p => sched.Submit(p, o)).ToArray();            // 5 sequences, 4 slots: one joins later
        var got = await Task.WhenAll(handles.Select(h => h.ReadAllAsync()));
        for (int i = 0; i < prompts.Length; i++) Assert.Equal(expected[i], got[i].ToArray());
        Assert.All(handles, h => Assert.Equal("length", h.FinishReason));
        // Seeded sampling: a sequence's tokens depend on its seed only, not on its batch neighbours.
        var sampled = new SamplingOptions { MaxNewTokens = 20, Temperature = 1.0, Seed = 9 };
        var alone = await sched.Submit(prompts[1], sampled).ReadAllAsync();
        var crowd = prompts.Select(p => sched.Submit(p, sampled with { Seed = 100 })).ToList();
        var together = await sched.Submit(prompts[1], sampled).ReadAllAsync();
        await Task.WhenAll(crowd.Select(h => h.ReadAllAsync()));
        Assert.Equal(alone, together);
    }

    [Fact]
    public async Task Stop_token_and_cancellation_free_the_slot()
    {
        TorchSetup.Init();
        using var model = CausalLM.Create(TorchSetup.TinyGpt2(vocab: 20, ctx: 32), seed: 1);
        using var sched = new BatchScheduler(model, CPU, maxBatch: 1, maxQueue: 4);
        var first = await sched.Submit([1, 2], new SamplingOptions { MaxNewTokens = 10, Temperature = 0 }).ReadAllAsync();
        var stopAt = first[3];
        var h = sched.Submit([1, 2], new SamplingOptions { MaxNewTokens = 10, Temperature = 0, StopToken = stopAt });
        var stopped = await h.ReadAllAsync();
        Assert.Equal(first[..(first.IndexOf(stopAt) + 1)], stopped);
        Assert.Equal("stop", h.FinishReason);
        using var cts = new CancellationTokenSource();
        cts.Cancel();
        var cancelled = sched.Submit([1], new SamplingOptions { MaxNewTokens = 10 }, cts.Token);
        await cancelled.ReadAllAsync();
        Assert.Equal("cancelled", cancelled.FinishReason);
        Assert.Equal(10, (await sched.Submit([3], new SamplingOptions { MaxNewTokens = 10 }).ReadAllAsync()).Count); // slot is free again
        Assert.Throws<BadInputException>(() => sched.Submit(Enumerable.Repeat(1, 33).ToArray(), new SamplingOptions()));
    }
}
