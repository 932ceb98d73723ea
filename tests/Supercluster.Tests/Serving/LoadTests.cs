using System.Diagnostics;
using System.Text.Json.Nodes;
using Xunit.Abstractions;

namespace Supercluster.Tests.Serving;

[Collection("Serving")]
public class LoadTests(ServingFixture f, ITestOutputHelper output)
{
    const int Clients = 32;
    static readonly TimeSpan Duration = TimeSpan.FromSeconds(20);
    const long MaxWorkingSetGrowth = 300L << 20;   // process memory (libtorch included) after warm-up
    const long MaxManagedGrowth = 64L << 20;       // managed heap after a full GC

    [Fact]
    public async Task Thirty_two_clients_for_twenty_seconds_get_no_errors_and_memory_stays_bounded()
    {
        using var http = new HttpClient { BaseAddress = new Uri(f.Server.Url), Timeout = TimeSpan.FromSeconds(30) };
        var proc = Process.GetCurrentProcess();
        long ok = 0, errors = 0, tokens = 0;
        var latencies = new System.Collections.Concurrent.ConcurrentBag<double>();
        var firstError = "";
        long ws0 = 0, managed0 = 0;
        var sw = Stopwatch.StartNew();
        var warm = Task.Run(async () =>
        {
            await Task.Delay(3000);
            GC.Collect(); GC.WaitForPendingFinalizers(); GC.Collect();
            managed0 = GC.GetTotalMemory(true);
            proc.Refresh(); ws0 = proc.WorkingSet64;
        });
        var clients = Enumerable.Range(0, Clients).Select(c => Task.Run(async () =>
        {
            var rng = new Random(c);
            while (sw.Elapsed < Duration)
            {
                var body = new JsonObject
                {
                    ["prompt"] = "We the people " + c, ["max_tokens"] = rng.Next(4, 24), ["temperature"] = rng.NextDouble(),
                    ["seed"] = c, ["stream"] = c % 2 == 1,
                };
                var t0 = Stopwatch.GetTimestamp();
                try
                {
                    if (c % 2 == 1)
                    {
                        var (chunks, done, _) = await http.PostStream("/v1/completions", body);
                        if (!done) throw new Exception("stream without [DONE]");
                        Interlocked.Add(ref tokens, chunks.Count - 1);
                    }
                    else
                    {
                        var (s, r) = await http.PostJson("/v1/completions", body);
                        if (s != 200) throw new Exception($"{s}: {r.ToJsonString()}");
                        Interlocked.Add(ref tokens, (int)r["usage"]!["completion_tokens"]!);
                    }
                    latencies.Add(Stopwatch.GetElapsedTime(t0).TotalMilliseconds);
                    Interlocked.Increment(ref ok);
                }
                catch (Exception e)
                {
                    if (Interlocked.Increment(ref errors) == 1) firstError = e.Message;
                }
            }
        })).ToArray();
        await Task.WhenAll(clients);
        await warm;
        var elapsed = sw.Elapsed;
        GC.Collect(); GC.WaitForPendingFinalizers(); GC.Collect();
        long managed1 = GC.GetTotalMemory(true);
        proc.Refresh();
        long ws1 = proc.WorkingSet64;
        var sorted = latencies.Order().ToArray();
        var summary = ($"{ok} requests, {errors} errors, {tokens} tokens in {elapsed.TotalSeconds:F1} s = {tokens / elapsed.TotalSeconds:F0} tokens/s; " +
                         $"latency p50 {sorted[sorted.Length / 2]:F0} ms p99 {sorted[(int)(sorted.Length * 0.99)]:F0} ms; " +
                         $"working set {ws0 >> 20} → {ws1 >> 20} MiB, managed {managed0 >> 20} → {managed1 >> 20} MiB");
        output.WriteLine(summary);
        Console.WriteLine("[load test] " + summary);
        Assert.True(errors == 0, $"{errors} errors, first: {firstError}");
        Assert.True(ok >= Clients, $"only {ok} requests completed");
        Assert.True(elapsed < Duration + TimeSpan.FromSeconds(15), $"load test overran: {elapsed}");
        Assert.True(ws1 - ws0 < MaxWorkingSetGrowth, $"working set grew {(ws1 - ws0) >> 20} MiB (bound {MaxWorkingSetGrowth >> 20})");
        Assert.True(managed1 - managed0 < MaxManagedGrowth, $"managed heap grew {(managed1 - managed0) >> 20} MiB (bound {MaxManagedGrowth >> 20})");
        Assert.Equal(0, f.Server.State.Model!.Scheduler.Active);
    }
}
