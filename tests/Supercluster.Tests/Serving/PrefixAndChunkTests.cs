using System.Text.Json.Nodes;
using Supercluster.Inference;
using Supercluster.Model;
using Supercluster.Server;
using TorchSharp;
using static TorchSharp.torch;

namespace Supercluster.Tests.Serving;

/// <summary>Prefix caching, chunked and batched (padded) prefill: each must give exactly what plain prefill gives.</summary>
[Collection("Serving")]
public class PrefixAndChunkTests(ServingFixture f)
{
    static readonly SamplingOptions Greedy = new() { MaxNewTokens = 20, Temperature = 0 };
    static readonly SamplingOptions Seeded = new() { MaxNewTokens = 20, Temperature = 1.0, TopK = 12, TopP = 0.9, Seed = 11 };

    static CausalLM Model(ModelFamily family, int ctx)
    {
        TorchSetup.Init();
        var config = family == ModelFamily.Gpt2 ? TorchSetup.TinyGpt2(vocab: 40, ctx: ctx) : TorchSetup.TinyLlama(vocab: 40, ctx: ctx);
        var model = CausalLM.Create(config, seed: 5);
        // float64: a hit, a chunk or a padded row multiplies matrices of other shapes than plain prefill; in float64 the
        // rounding differences stay far below the margins of argmax and of a seeded multinomial draw, so the tokens must
        // be identical (the float32 server test below checks the served model the same way).
        model.to(ScalarType.Float64);
        model.eval();
        return model;
    }

    static async Task<List<int>[]> OneAtATime(BatchScheduler s, IEnumerable<(int[] Prompt, SamplingOptions O)> runs)
    {
        var results = new List<List<int>>();
        foreach (var (p, o) in runs) results.Add(await s.Submit(p, o).ReadAllAsync());
        return results.ToArray();
    }

    [Theory]
    [InlineData(ModelFamily.Gpt2)]
    [InlineData(ModelFamily.Llama)]
    public async Task Prefix_cache_hits_give_the_outputs_of_misses_greedy_and_seeded(ModelFamily family)
    {
        using var model = Model(family, ctx: 96);
        var system = Enumerable.Range(0, 37).Select(i => (i * 7 + 3) % 40).ToArray();          // 4 whole blocks of 8 and 5 more
        int[][] prompts = [[.. system, 1, 2], [.. system, 3], [.. system, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13], system, [.. system[..16], 39]];
        var runs = prompts.SelectMany(p => new[] { (p, Greedy), (p, Seeded) }).ToArray();
        List<int>[] expected;
        using (var plain = new BatchScheduler(model, CPU, maxBatch: 4, maxQueue: 32))
            expected = await OneAtATime(plain, runs);

        using var cached = new BatchScheduler(model, CPU, maxBatch: 4, maxQueue: 32, prefixCacheBytes: 1 << 20, prefixBlock: 8);
        var sequential = await OneAtATime(cached, runs);
        for (int i = 0; i < runs.Length; i++) Assert.Equal(expected[i], sequential[i]);
        // Every run after the first finds its prompt's whole blocks (all but the last token) cached.
        long hit = cached.PrefixCacheTokens.Hit;
        Assert.True(hit >= 32 * (runs.Length - 3), $"only {hit} prompt tokens came from the prefix cache");

        // Concurrently (sequences sharing a first block start one after another, then hit): the same tokens.
        var together = await Task.WhenAll(runs.Select(r => cached.Submit(r.Item1, r.Item2).ReadAllAsync()));
        for (int i = 0; i < runs.Length; i++) Assert.Equal(expected[i], together[i]);
        Assert.True(cached.PrefixCacheTokens.Hit - hit >= 32 * 8 + 16 * 2, "concurrent requests with the cached prefix did not hit it");
    }

    [Fact]
    public void Prefix_cache_stays_within_its_memory_bound_evicts_leaves_first_and_restores_exact_values()
    {
        TorchSetup.Init();
        var config = TorchSetup.TinyGpt2(vocab: 40, ctx: 32);
        using var cache = new BatchKvCache(config, slots: 2, CPU, ScalarType.Float32);
        using (var scope = NewDisposeScope())
            for (int l = 0; l < config.NLayer; l++)
                cache.Write(l, 0, 0, randn(config.NKvHead, 32, config.HeadDim), randn(config.NKvHead, 32, config.HeadDim));
        cache.SetLength(0, 12);
        long block = 2L * config.NLayer * config.NKvHead * 4 * config.HeadDim * sizeof(float);
        using var prefix = new PrefixCache(config.NLayer, maxBytes: 4 * block, blockTokens: 4);
        int[] p1 = [.. Enumerable.Range(0, 12)], p2 = [0, 1, 2, 3, .. Enumerable.Range(20, 8)];
        prefix.Store(p1, 12, cache, 0);
        Assert.Equal(3, prefix.Blocks);
        prefix.Store(p2, 12, cache, 0);                              // 2 new blocks, room for 1: p1's last block goes
        Assert.Equal(4, prefix.Blocks);
        Assert.True(prefix.Bytes <= prefix.MaxBytes, $"{prefix.Bytes} bytes over the bound {prefix.MaxBytes}");

        Assert.Equal(8, prefix.Restore(p1, 12, cache, 1));         // the shared root and p1's second block survive, its leaf went
        Assert.Equal(8, cache.LengthOf(1));
        Assert.Equal(8, prefix.Restore(p2, 11, cache, 1));         // at most 11 tokens: whole blocks only
        Assert.Equal(12, prefix.Restore(p2, 12, cache, 1));
        Assert.Equal(0, prefix.Restore([5, 6, 7, 8, 9], 5, cache, 1));
        // p2's blocks are slot 0's positions 0..11 (p2 was stored from there): the restored keys/values are exactly those.
        for (int l = 0; l < config.NLayer; l++)
        {
            var (k0, v0) = cache.View(l, 0, 0, 12);
            var (k1, v1) = cache.View(l, 1, 0, 12);
            Assert.True(k0.eq(k1).all().item<bool>() && v0.eq(v1).all().item<bool>(), $"layer {l}: restored keys/values differ");
        }
    }

    [Theory]
    [InlineData(ModelFamily.Gpt2)]
    [InlineData(ModelFamily.Llama)]
    public async Task Chunked_prefill_gives_the_unchunked_output_while_a_stream_runs(ModelFamily family)
    {
        using var model = Model(family, ctx: 128);
        var longPrompt = Enumerable.Range(0, 70).Select(i => (i * 11 + 5) % 40).ToArray();
        int[] shortPrompt = [3, 1, 4];
        var running = new SamplingOptions { MaxNewTokens = 40, Temperature = 0 };
        List<int>[] expected;
        using (var plain = new BatchScheduler(model, CPU, maxBatch: 4, maxQueue: 16))
            expected = await OneAtATime(plain, [(shortPrompt, running), (longPrompt, Greedy), (longPrompt, Seeded)]);

        using var chunked = new BatchScheduler(model, CPU, maxBatch: 4, maxQueue: 16, prefillChunk: 8);
        var stream = chunked.Submit(shortPrompt, running);
        await stream.Tokens.WaitToReadAsync();                                  // decoding when the long prompts arrive
        long forwards = chunked.PrefillForwards;
        var longs = new[] { chunked.Submit(longPrompt, Greedy), chunked.Submit(longPrompt, Seeded) };
        var got = await Task.WhenAll([stream.ReadAllAsync(), .. longs.Select(h => h.ReadAllAsync())]);
        for (int i = 0; i < 3; i++) Assert.Equal(expected[i], got[i]);
        // 2 × 70 prompt tokens at ≤ 8 per iteration: at least 18 prefill forwards, each followed by a decode step.
        Assert.True(chunked.PrefillForwards - forwards >= 18, $"{chunked.PrefillForwards - forwards} prefill forwards: not chunked");
    }

    /// <summary>
    /// Prompts arriving while a stream decodes are prefilled inside its decode steps (one mixed forward per iteration)
    /// and give exactly the tokens of separate prefill forwards: greedy and seeded, chunked, with and without the prefix
    /// cache. (StepDelay keeps the stream running while they arrive.)
    /// </summary>
    [Theory]
    [InlineData(ModelFamily.Gpt2)]
    [InlineData(ModelFamily.Llama)]
    public async Task Prompts_prefilled_inside_decode_steps_give_the_tokens_of_separate_prefill_forwards(ModelFamily family)
    {
        using var model = Model(family, ctx: 128);
        int[] shortPrompt = [3, 1, 4];
        var running = new SamplingOptions { MaxNewTokens = 60, Temperature = 0 };
        var system = Enumerable.Range(0, 20).Select(i => (i * 7 + 3) % 40).ToArray();
        int[][] prompts = [[.. system, 1, 2], [5, 9, 2, 6, 5], [.. system, 8], Enumerable.Range(0, 30).Select(i => (i * 11 + 5) % 40).ToArray(), [7]];
        var results = new List<List<int>[]>();
        var mixedForwards = new List<long>();
        foreach (bool mixed in new[] { false, true })
        {
            using var sched = new BatchScheduler(model, CPU, maxBatch: 8, maxQueue: 16, prefillChunk: 8, prefixCacheBytes: 1 << 20, prefixBlock: 8)
                { MixedPrefill = mixed, StepDelay = TimeSpan.FromMilliseconds(2) };
            var stream = sched.Submit(shortPrompt, running);
            await stream.Tokens.WaitToReadAsync();                                 // decoding when the prompts arrive
            var others = prompts.SelectMany(p => new[] { sched.Submit(p, Greedy), sched.Submit(p, Seeded) }).ToArray();
            results.Add(await Task.WhenAll([stream.ReadAllAsync(), .. others.Select(h => h.ReadAllAsync())]));
            mixedForwards.Add(sched.MixedForwards);
        }
        Assert.Equal(0, mixedForwards[0]);
        Assert.True(mixedForwards[1] > 0, "no prompt was prefilled inside a decode step");
        for (int i = 0; i < results[0].Length; i++) Assert.Equal(results[0][i], results[1][i]);
    }

    [Fact]
    public async Task Prompts_of_different_lengths_prefilled_together_give_the_one_at_a_time_outputs()
    {
        using var model = Model(ModelFamily.Llama, ctx: 64);
        int[][] prompts = [[1], [2, 3, 4, 5, 6, 7, 8], [9, 10, 11, 12, 13], [14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26], [27, 28, 29]];
        var runs = prompts.SelectMany(p => new[] { (p, Greedy), (p, Seeded) }).ToArray();
        var expected = runs.Select(r => Sampler.Generate(model, r.Item1, r.Item2 with { Temperature = 0 }, CPU)[r.Item1.Length..]).ToArray();
        using var sched = new BatchScheduler(model, CPU, maxBatch: 16, maxQueue: 16);
        List<int>[] alone = await OneAtATime(sched, runs);
        long forwards = sched.PrefillForwards;
        // Submitted at once: admitted in one iteration, prompts of 5..13 tokens padded into shared prefill forwards.
        var together = await Task.WhenAll(runs.Select(r => sched.Submit(r.Item1, r.Item2).ReadAllAsync()));
        for (int i = 0; i < runs.Length; i++)
        {
            if (runs[i].Item2.Temperature == 0) Assert.Equal(expected[i], alone[i].ToArray());
            Assert.Equal(alone[i], together[i]);
        }
        Assert.True(sched.PrefillForwards - forwards < runs.Length, "no prefill forward was shared");
    }

    /// <summary>The served float32 model, over HTTP: a prefix-cache hit answers exactly what a server without the cache answers.</summary>
    [Fact]
    public async Task Served_prefix_cache_hits_answer_what_a_server_without_it_answers()
    {
        await using var plain = await f.StartExtraAsync(new ServerOptions { PrefixCacheBytes = 0 });
        using var plainHttp = new HttpClient { BaseAddress = new Uri(plain.Url) };
        const string system = "We the People of the United States, in ";   // 39 bytes: 2 whole blocks of 16
        string[] endings = ["Order", "form a", "the Union", "justice"];
        JsonObject Req(string end, bool seeded) => seeded
            ? new JsonObject { ["prompt"] = system + end, ["max_tokens"] = 12, ["temperature"] = 0.9, ["seed"] = 3, ["n"] = 2 }
            : new JsonObject { ["prompt"] = system + end, ["max_tokens"] = 12, ["temperature"] = 0 };
        static string Texts(JsonNode body) => string.Join("|", body["choices"]!.AsArray().Select(c => (string)c!["text"]!));
        var sched = f.Server.State.Model!.Scheduler;
        long hits = sched.PrefixCacheTokens.Hit;
        foreach (var seeded in new[] { false, true })
            foreach (var end in endings)
            {
                var (s0, miss) = await plainHttp.PostJson("/v1/completions", Req(end, seeded));
                var (s1, first) = await f.Http.PostJson("/v1/completions", Req(end, seeded));
                var (s2, again) = await f.Http.PostJson("/v1/completions", Req(end, seeded));
                Assert.True(s0 == 200 && s1 == 200 && s2 == 200, $"{s0} {s1} {s2}");
                Assert.Equal(Texts(miss), Texts(first));
                Assert.Equal(Texts(miss), Texts(again));
            }
        Assert.True(sched.PrefixCacheTokens.Hit - hits >= 32 * 15, $"{sched.PrefixCacheTokens.Hit - hits} prompt tokens from the cache");
        Assert.Equal((0L, 0L), plain.State.Model!.Scheduler.PrefixCacheTokens);
    }
}
