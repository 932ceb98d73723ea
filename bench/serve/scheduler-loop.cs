#:project ../../src/Supercluster/Supercluster.csproj
#:property PublishAot=false
#:property Configuration=Release
// The scheduler thread's cost outside the forward, per step and per row, without HTTP (bench/README.md, docs/serving.md):
//   dotnet run -c Release bench/serve/scheduler-loop.cs -- CHECKPOINT [rounds]
// N in-process clients (1 and 16) each send 64-token greedy requests of a 20-token prompt back to back, as
// bench-serve.py does over HTTP. Per round and level: the scheduler thread's CPU per decode step (from
// /proc/self/task/TID/stat, so other threads and other jobs do not count), the same batch's bare decode step (Begin +
// forward + argmax, timed with the thread's CPU clock) run right after on this thread, and the difference: what the
// loop spends around the forward (prefill chunks of new requests, sampling, hand-offs, bookkeeping). Also the
// scheduler's `--profile` line and its bytes allocated per step. Best of the rounds (a shared machine inflates CPU
// time least in its quietest round).
using System.Diagnostics;
using System.Runtime.InteropServices;
using Supercluster.Checkpointing;
using Supercluster.Inference;
using Supercluster.Runtime;
using static TorchSharp.torch;

LibTorchLoader.EnsureLoaded();
set_num_threads(1);
var (model, _, _) = ModelCheckpoint.LoadForInference(args[0], CPU);
int rounds = args.Length > 1 ? int.Parse(args[1]) : 5;
var c = model.Config;
model.eval();

using var scheduler = new BatchScheduler(model, CPU, maxBatch: 32, prefillChunk: 256, prefixCacheBytes: 0);
var profile = new SchedulerProfile();
scheduler.Profile = profile;

// CPU seconds of the thread named supercluster-scheduler (Linux shows 15 characters of the name).
static double SchedulerCpu()
{
    foreach (var dir in Directory.GetDirectories("/proc/self/task"))
    {
        string s;
        try { s = File.ReadAllText(Path.Combine(dir, "stat")); } catch (IOException) { continue; }
        if (!s.Contains("(supercluster-sc)")) continue;
        var f = s[(s.LastIndexOf(')') + 2)..].Split(' ');
        return (long.Parse(f[11]) + long.Parse(f[12])) / 100.0;        // utime + stime in clock ticks (USER_HZ = 100)
    }
    throw new InvalidOperationException("no scheduler thread");
}

(double CpuPerStep, double RowsPerStep, string Profile) Serve(int clients, int requests)
{
    var prompt = Enumerable.Range(0, 20).Select(i => 65 + i % 26).ToArray();
    var o = new SamplingOptions { MaxNewTokens = 64, Temperature = 0 };
    profile.Take(reset: true);
    long steps0 = scheduler.DecodeSteps;
    double cpu0 = SchedulerCpu();
    Task.WaitAll(Enumerable.Range(0, clients).Select(k => Task.Run(async () =>
    {
        for (int r = 0; r < requests; r++) await scheduler.Submit(prompt, o with { Seed = k }).ReadAllAsync();
    })).ToArray());
    double cpu = SchedulerCpu() - cpu0;
    var snap = profile.Take(reset: true);
    long steps = scheduler.DecodeSteps - steps0;
    return (cpu * 1000 / steps, (double)snap.Rows / steps, snap.ToString());
}

[DllImport("libc")] static extern int clock_gettime(int clock, out Timespec ts);
static double ThreadCpuMs() { clock_gettime(3, out var t); return t.Sec * 1e3 + t.Nsec / 1e6; }      // CLOCK_THREAD_CPUTIME_ID

// The bare decode step at batch b, as the scheduler runs it (PackedLinear for a small GPT-2), CPU ms of this thread.
double BareStep(int b, int steps)
{
    using var _ng = no_grad();
    using var cache = new BatchKvCache(c, 32, CPU, ScalarType.Float32);
    cache.PackProjections(model);
    var slots = Enumerable.Range(0, b).Select(_ => cache.Rent()).ToArray();
    cache.Begin(slots, 20);
    using (NewDisposeScope()) model.Forward(randint(0, c.VocabSize, [b, 20]), cache);
    cache.End();
    var ids = randint(0, c.VocabSize, [b, 1]);
    void Step()
    {
        if (cache.LengthOf(slots[0]) + 1 >= 20 + 64) foreach (var s in slots) cache.SetLength(s, 20);   // the requests' mean length
        using var scope = NewDisposeScope();
        cache.Begin(slots, 1);
        model.Forward(ids, cache).select(1, 0).argmax(1).data<long>().ToArray();
        cache.End();
    }
    for (int i = 0; i < 20; i++) Step();
    double t0 = ThreadCpuMs();
    for (int i = 0; i < steps; i++) Step();
    return (ThreadCpuMs() - t0) / steps;
}

Serve(16, 4); Serve(1, 4);                                           // warm-up: the JIT's tiers settle
// Each quantity's best round on its own: a difference of two noisy figures taken from one round swings both ways.
var best = new Dictionary<int, (double Loop, double Bare, double Rows, string Profile)>();
for (int round = 0; round < rounds; round++)
    foreach (int n in new[] { 1, 16 })
    {
        var (loop, rows, prof) = Serve(n, n == 1 ? 12 : 4);
        double bare = BareStep(n, 300);
        Console.WriteLine($"round {round}, {n} clients: scheduler thread {loop:F3} ms/step ({rows:F1} rows), bare step {bare:F3} ms, outside {loop - bare:F3} ms  [load {File.ReadAllText("/proc/loadavg")[..14]}]");
        if (!best.TryGetValue(n, out var b)) best[n] = (loop, bare, rows, prof);
        else best[n] = (Math.Min(b.Loop, loop), Math.Min(b.Bare, bare), rows, loop < b.Loop ? prof : b.Profile);
    }
foreach (var (n, b) in best)
    Console.WriteLine($"{n} clients (best of the rounds): scheduler thread {b.Loop:F3} ms/step at {b.Rows:F1} rows, bare step {b.Bare:F3}, outside the forward {b.Loop - b.Bare:F3} ms/step\n  {b.Profile}");
var (one, sixteen) = (best[1], best[16]);
double perRow = ((sixteen.Loop - sixteen.Bare) - (one.Loop - one.Bare)) / (sixteen.Rows - one.Rows);
Console.WriteLine($"outside the forward: {one.Loop - one.Bare:F3} ms/step at 1 row, {sixteen.Loop - sixteen.Bare:F3} at {sixteen.Rows:F1} rows: {perRow * 1000:F1} µs per extra row");

[StructLayout(LayoutKind.Sequential)] struct Timespec { public long Sec, Nsec; }
