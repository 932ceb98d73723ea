#:project ../../src/Supercluster/Supercluster.csproj
#:property PublishAot=false
#:property Configuration=Release
// The batch scheduler's decode step without HTTP, and its parts, at batch 1 and 16 (bench/README.md, docs/serving.md):
//   dotnet run -c Release bench/serve/decode-step.cs -- CHECKPOINT [steps]
// One libtorch thread (as `serve --threads 1`). Prints CPU ms per step (best of 5 rounds of `steps`) of the whole step (Begin + forward + argmax) and of
// its suspects alone: attention (SDPA with the batch's mask vs. the elementwise form), the KV write, the mask. Then A/B pairs
// timed in alternating rounds (best of 12, CPU time): the decode step with DecodeAttention vs libtorch's SDPA, one mixed
// prefill + decode forward vs a prefill forward and a decode step, and the batch-16 step on 1 vs 2 libtorch threads.
// First the scheduler's loop as a whole (`-- CHECKPOINT STEPS sched`: only that).
using System.Diagnostics;
using Supercluster.Checkpointing;
using Supercluster.Inference;
using Supercluster.Model;
using Supercluster.Runtime;
using static TorchSharp.torch;

LibTorchLoader.EnsureLoaded();
set_num_threads(1);
var (model, _, _) = ModelCheckpoint.LoadForInference(args[0], CPU);
int steps = args.Length > 1 ? int.Parse(args[1]) : 300;
var c = model.Config;
model.eval();
using var _ng = no_grad();

// CPU time of the process, not wall time: on a shared machine the wall clock counts other jobs' time slices; with one
// libtorch thread the process's CPU time is this work's own (GC and JIT threads are idle after the warm-up). The best
// of 5 rounds: a loaded machine still inflates CPU time (caches, frequency), least in its quietest round.
double Time(Action a, int n)
{
    for (int i = 0; i < Math.Min(20, n); i++) a();
    var p = Process.GetCurrentProcess();
    double best = double.MaxValue;
    for (int round = 0; round < 5; round++)
    {
        p.Refresh();
        var t0 = p.TotalProcessorTime;
        for (int i = 0; i < n; i++) a();
        p.Refresh();
        best = Math.Min(best, (p.TotalProcessorTime - t0).TotalMilliseconds / n);
    }
    return best;
}

// The decode step at batch 1 and 16 with one of the cache's fast paths on vs off, in alternating rounds.
void DecodeAb(Func<BatchKvCache, bool> setUp, Action<BatchKvCache, bool> set, string on, string off)
{
    using var cache = new BatchKvCache(c, 32, CPU, ScalarType.Float32);
    if (!setUp(cache)) return;
    var all = Enumerable.Range(0, 16).Select(_ => cache.Rent()).ToArray();
    cache.Begin(all, 32);
    using (NewDisposeScope()) model.Forward(randint(0, c.VocabSize, [16, 32]), cache);
    cache.End();
    foreach (int b in new[] { 1, 16 })
    {
        var rows = all[..b];
        var ids = randint(0, c.VocabSize, [b, 1]);
        void Step(bool fast)
        {
            foreach (var s in rows) cache.SetLength(s, 32);
            set(cache, fast);
            using var scope = NewDisposeScope();
            cache.Begin(rows, 1);
            model.Forward(ids, cache).select(1, 0).argmax(1).data<long>().ToArray();
            cache.End();
        }
        var r = Pair(() => Step(true), () => Step(false), steps);
        Console.WriteLine($"batch {b,2} decode step: {on} {r[0]:F3} ms, {off} {r[1]:F3} ms ({r[1] / r[0]:F2}x)");
    }
}

// The projections in C# (PackedLinear, as the scheduler runs a small GPT-2) vs libtorch's linear
// (`-- CHECKPOINT STEPS linears`: only this).
if (args.Length > 2 && args[2] == "linears")
{
    DecodeAb(cache =>
    {
        if (cache.PackProjections(model)) return true;
        Console.WriteLine("not a small GPT-2: the scheduler keeps libtorch's linear");
        return false;
    }, (cache, on) => cache.PackedLinears = on, "projections in C#", "libtorch linear");
    return;
}

// The whole decode step in C# (Gpt2Decoder, as the scheduler runs a small GPT-2) vs the model's layers through libtorch
// with the projections in C# (`-- CHECKPOINT STEPS whole`: only this).
if (args.Length > 2 && args[2] == "whole")
{
    DecodeAb(cache =>
    {
        if (cache.PackProjections(model)) return true;
        Console.WriteLine("not a small GPT-2: the scheduler keeps libtorch's layers");
        return false;
    }, (cache, on) => cache.WholeStep = on, "whole step in C#", "libtorch layers");
    return;
}

// DecodeAttention alone: 16 rows, every layer's heads, 64 cached keys each, as the batch-16 step runs it
// (`-- CHECKPOINT STEPS attention`: only this; CPU ms per step, best of 5 rounds).
if (args.Length > 2 && args[2] == "attention")
{
    long hd = c.HeadDim, d = c.NEmbd;
    var slabK = randn(32, c.NKvHead, c.SeqLen, hd);
    var slabV = randn(32, c.NKvHead, c.SeqLen, hd);
    var qkv = randn(16, 1, 3 * d);
    int[] slots = Enumerable.Range(0, 16).ToArray();
    long[] keys = Enumerable.Range(0, 16).Select(i => 64L + i % 5).ToArray();
    double ms = Time(() => { using var s = NewDisposeScope(); for (int l = 0; l < c.NLayer; l++) DecodeAttention.RunPacked(qkv, slabK, slabV, hd, slots, keys); }, steps * 4);
    Console.WriteLine($"batch 16 attention, {c.NLayer} layers × {c.NHead} heads, 64-68 keys: {ms:F4} ms per step");
    return;
}

// GPT-2's decode step reading q, k, v from the fused qkv vs splitting them into heads first
// (`-- CHECKPOINT STEPS packed`: only this).
if (args.Length > 2 && args[2] == "packed")
{
    DecodeAb(_ => true, (cache, on) => cache.PackedDecode = on, "q, k, v from qkv", "split into heads");
    return;
}

// The scheduler's whole loop in process (decode steps, mixed prefill, greedy sampling, token hand-off; no HTTP):
// CPU ms per generated token with 1 and with 16 clients, each sending 20-token prompts for 64 tokens back to back.
// With `sched` as the only argument after the checkpoint, only this part runs.
{
    using var scheduler = new BatchScheduler(model, CPU, maxBatch: 32, prefillChunk: 256, prefixCacheBytes: 0);
    double PerToken(int clients, int requests)
    {
        var p = Process.GetCurrentProcess();
        p.Refresh();
        var t0 = p.TotalProcessorTime;
        long tokens0 = scheduler.TokensGenerated;
        var o = new SamplingOptions { MaxNewTokens = 64, Temperature = 0 };
        var prompt = Enumerable.Range(0, 20).Select(i => 65 + i % 26).ToArray();
        Task.WaitAll(Enumerable.Range(0, clients).Select(c => Task.Run(async () =>
        {
            for (int r = 0; r < requests; r++) await scheduler.Submit(prompt, o with { Seed = c }).ReadAllAsync();
        })).ToArray());
        p.Refresh();
        return (p.TotalProcessorTime - t0).TotalMilliseconds / (scheduler.TokensGenerated - tokens0);
    }
    PerToken(16, 2);
    double one = double.MaxValue, sixteen = double.MaxValue;
    for (int round = 0; round < 5; round++) { one = Math.Min(one, PerToken(1, 8)); sixteen = Math.Min(sixteen, PerToken(16, 4)); }
    Console.WriteLine($"scheduler loop, CPU per token (best of 5): 1 client {one:F3} ms, 16 clients {sixteen:F3} ms; 16 / 1 per-token efficiency {one / sixteen:F1}x");
    if (args.Length > 2 && args[2] == "sched") return;
}

double step1 = 0;
double wallOne = double.MaxValue, wallTwo = double.MaxValue;
foreach (int b in new[] { 1, 16 })
{
    using var cache = new BatchKvCache(c, 32, CPU, ScalarType.Float32);
    cache.PackProjections(model);                                   // the scheduler's step (PackedLinear for a small GPT-2)
    var slots = Enumerable.Range(0, b).Select(_ => cache.Rent()).ToArray();
    int prompt = 16;
    cache.Begin(slots, prompt);
    using (NewDisposeScope()) model.Forward(randint(0, c.VocabSize, [b, prompt]), cache);
    cache.End();
    var ids = randint(0, c.VocabSize, [b, 1]);
    // Stay below the context: reset the lengths when full.
    double step = Time(() =>
    {
        if (cache.LengthOf(slots[0]) + 1 >= c.SeqLen) foreach (var s in slots) cache.SetLength(s, prompt);
        using var scope = NewDisposeScope();
        cache.Begin(slots, 1);
        var logits = model.Forward(ids, cache).select(1, 0);
        logits.argmax(1).data<long>().ToArray();
        cache.End();
    }, steps);
    double begin = Time(() => { cache.Begin(slots, 1); cache.End(); }, steps);
    long hd = c.HeadDim, keys = c.SeqLen / 2;
    var q = randn(b, c.NHead, 1, hd);
    var k = randn(b, c.NKvHead, keys, hd);
    var v = randn(b, c.NKvHead, keys, hd);
    var mask = ones(b, 1, 1, keys, dtype: ScalarType.Bool);
    double sdpa = Time(() => { using var s = NewDisposeScope(); nn.functional.scaled_dot_product_attention(q, k, v, attn_mask: mask); }, steps);
    double elementwise = Time(() =>
    {
        using var s = NewDisposeScope();
        var w = (k * q).sum(-1) / Math.Sqrt(hd);                                       // [B, H, K]
        var p = w.masked_fill(mask.view(b, 1, keys).logical_not(), double.NegativeInfinity).softmax(-1);
        (p.unsqueeze(-1) * v).sum(2, keepdim: true);                                   // [B, H, 1, hd]
    }, steps);
    // The KV write and the in-place read of one layer, as the forward does them.
    var kNew = randn(b, 1, c.NKvHead, hd).transpose(1, 2);                           // [B, H, 1, hd], strided as the model's
    var vNew = randn(b, 1, c.NKvHead, hd).transpose(1, 2);
    cache.Begin(slots, 1);
    cache.TimeWrites = true;
    double append = Time(() => { using var s = NewDisposeScope(); cache.Append(0, kNew, vNew); }, steps);
    double writeOnly = cache.TakeWriteTicks() * 1000.0 / Stopwatch.Frequency / (5 * steps + Math.Min(20, steps));   // wall, inside Append, mean
    cache.TimeWrites = false;
    // The alternative write: one index_copy_ of B·H rows into the slab viewed as [slots·H·context, hd].
    var slab = zeros(32, c.NKvHead, c.SeqLen, hd);
    var flat = slab.view(-1, hd);
    var rowsIdx = tensor(Enumerable.Range(0, b).SelectMany(i => Enumerable.Range(0, (int)c.NKvHead).Select(h => ((long)slots[i] * c.NKvHead + h) * c.SeqLen + 20)).ToArray());
    double copy = Time(() => { using var s = NewDisposeScope(); flat.index_copy_(0, rowsIdx, kNew.reshape(-1, hd)); flat.index_copy_(0, rowsIdx, vNew.reshape(-1, hd)); }, steps);
    var (ks, vs) = cache.Append(0, kNew, vNew);
    var m = cache.Mask(1)!;
    double sdpaSlab = Time(() => { using var s = NewDisposeScope(); nn.functional.scaled_dot_product_attention(q, ks, vs, attn_mask: m); }, steps);
    double math = Time(() =>
    {
        using var s = NewDisposeScope();
        var w = q.matmul(ks.transpose(-2, -1)).mul_(1 / Math.Sqrt(hd));                 // [B, H, 1, K]
        w.masked_fill_(m.logical_not(), double.NegativeInfinity).softmax(-1).matmul(vs);
    }, steps);
    cache.End();
    double linear = Time(() => { using var s = NewDisposeScope(); model.Forward(ids, KvCache.None(CPU)); }, steps);
    if (b == 16) Console.WriteLine($"batch 16 / batch 1 per-token efficiency: {16 * step1 / step:F1}x (target >= 10x)");
    if (b == 1) step1 = step;
    Console.WriteLine($"batch {b,2}: step {step:F3} ms ({b / step * 1000:F0} tokens/s) | begin {begin:F3} | per layer: KV append {append:F3} (its write {writeOnly:F3}; index_copy_ alone {copy:F3}), SDPA on the cache {sdpaSlab:F3} (matmul-softmax-matmul {math:F3}), SDPA contiguous {sdpa:F3}, elementwise attention {elementwise:F3} | forward without cache {linear:F3}");
}

// A/B pairs in alternating rounds: whatever the machine does hits both sides alike.
double[] Pair(Action a, Action b, int n)
{
    for (int i = 0; i < 20; i++) { a(); b(); }
    var p = Process.GetCurrentProcess();
    double[] best = [double.MaxValue, double.MaxValue];
    for (int round = 0; round < 12; round++)
        for (int w = 0; w < 2; w++)
        {
            p.Refresh();
            var t0 = p.TotalProcessorTime;
            for (int i = 0; i < n; i++) (w == 0 ? a : b)();
            p.Refresh();
            best[w] = Math.Min(best[w], (p.TotalProcessorTime - t0).TotalMilliseconds / n);
        }
    return best;
}
{
    // 16 rows at 64 cached tokens (slots 0-15) and a new 16-token prompt in slot 16.
    using var cache = new BatchKvCache(c, 32, CPU, ScalarType.Float32);
    var slots = Enumerable.Range(0, 17).Select(_ => cache.Rent()).ToArray();
    var rows = slots[..16];
    cache.Begin(rows, 64);
    using (NewDisposeScope()) model.Forward(randint(0, c.VocabSize, [16, 64]), cache);
    cache.End();
    var ids = randint(0, c.VocabSize, [16, 1]);
    var chunk = randint(0, c.VocabSize, [1, 16]);
    var mixedIds = cat([ids.view(1, 16), chunk], 1);
    var picked = tensor(Enumerable.Range(0, 16).Select(i => (long)i).Append(31).ToArray());
    void Reset() { foreach (var s in rows) cache.SetLength(s, 64); cache.SetLength(slots[16], 0); }
    void Decode() { using var scope = NewDisposeScope(); cache.Begin(rows, 1); model.Forward(ids, cache).select(1, 0).argmax(1).data<long>().ToArray(); cache.End(); }
    var attention = Pair(() => { Reset(); cache.FastDecode = true; Decode(); }, () => { Reset(); cache.FastDecode = false; Decode(); }, steps);
    cache.FastDecode = true;
    Console.WriteLine($"batch 16 decode step: DecodeAttention {attention[0]:F3} ms, libtorch SDPA {attention[1]:F3} ms ({attention[1] / attention[0]:F2}x)");
    var mixed = Pair(() =>
    {
        Reset();
        using var scope = NewDisposeScope();
        cache.BeginMixed(rows, [(slots[16], 16L)]);
        model.Forward(mixedIds, cache)[0].index_select(0, picked).argmax(1).data<long>().ToArray();
        cache.End();
    }, () =>
    {
        Reset();
        using var scope = NewDisposeScope();
        cache.Begin(slots[16..], 16);
        model.Forward(chunk, cache).select(1, 15).argmax(1).data<long>().ToArray();
        cache.End();
        Decode();
    }, steps);
    Console.WriteLine($"16 decode rows + a 16-token prompt chunk: one mixed forward {mixed[0]:F3} ms, prefill forward + decode step {mixed[1]:F3} ms ({mixed[1] / mixed[0]:F2}x)");
    // CPU time counts both threads' work: this is the cost, not the latency (a second core's share is free only when idle).
    var threads = Pair(() => { Reset(); set_num_threads(1); Decode(); }, () => { Reset(); set_num_threads(2); Decode(); }, steps);
    set_num_threads(1);
    Console.WriteLine($"batch 16 decode step, CPU time: 1 libtorch thread {threads[0]:F3} ms, 2 threads {threads[1]:F3} ms");
    var sw = Stopwatch.StartNew();
    var wall = Pair(() => { Reset(); set_num_threads(1); sw.Restart(); Decode(); wallOne = Math.Min(wallOne, sw.Elapsed.TotalMilliseconds); },
        () => { Reset(); set_num_threads(2); sw.Restart(); Decode(); wallTwo = Math.Min(wallTwo, sw.Elapsed.TotalMilliseconds); }, steps);
    set_num_threads(1);
    Console.WriteLine($"batch 16 decode step, best wall time: 1 libtorch thread {wallOne:F3} ms, 2 threads {wallTwo:F3} ms");
}
