#:project ../../src/Supercluster/Supercluster.csproj
#:property PublishAot=false
#:property Configuration=Release
// The batch scheduler's decode step without HTTP, and its parts, at batch 1 and 16 (bench/README.md, docs/serving.md):
//   dotnet run -c Release bench/serve/decode-step.cs -- CHECKPOINT [steps]
// One libtorch thread (as `serve --threads 1`). Prints CPU ms per step (best of 5 rounds of `steps`) of the whole step (Begin + forward + argmax) and of
// its suspects alone: attention (SDPA with the batch's mask vs. the elementwise form), the KV write, the mask.
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

double step1 = 0;
foreach (int b in new[] { 1, 16 })
{
    using var cache = new BatchKvCache(c, 32, CPU, ScalarType.Float32);
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
