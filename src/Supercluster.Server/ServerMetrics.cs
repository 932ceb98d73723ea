using System.Diagnostics;
using Prometheus;
using Supercluster.Inference;

namespace Supercluster.Server;

/// <summary>
/// Prometheus metrics in a registry of this server (several servers can live in one process, e.g. tests):
/// requests, prompt/generated tokens, tokens/s (over the last few seconds), queue depth, active sequences, latency.
/// </summary>
public sealed class ServerMetrics
{
    readonly Counter _requests, _generated, _prompt;
    readonly Gauge _tokensPerSecond, _queue, _active, _inFlight, _resident, _managed, _allocated, _workItems, _gcs;
    readonly Histogram _latency;
    readonly Queue<(long Ticks, long Tokens)> _window = new();
    BatchScheduler? _scheduler;

    public ServerMetrics()
    {
        Registry = Metrics.NewCustomRegistry();
        var f = Metrics.WithCustomRegistry(Registry);
        _requests = f.CreateCounter("supercluster_requests_total", "HTTP requests by endpoint and status code", "endpoint", "code");
        _generated = f.CreateCounter("supercluster_tokens_generated_total", "Tokens generated (completion tokens)");
        _prompt = f.CreateCounter("supercluster_prompt_tokens_total", "Prompt tokens processed");
        _tokensPerSecond = f.CreateGauge("supercluster_tokens_per_second", "Tokens generated per second, over the last 5 s");
        _queue = f.CreateGauge("supercluster_queue_depth", "Sequences waiting for a batch slot");
        _active = f.CreateGauge("supercluster_active_sequences", "Sequences in the decode batch");
        _inFlight = f.CreateGauge("supercluster_requests_in_flight", "Generation/embedding requests being served");
        _resident = f.CreateGauge("supercluster_resident_memory_bytes", "Resident memory of the server process (libtorch and the managed heap)");
        _managed = f.CreateGauge("supercluster_managed_heap_bytes", "Managed (.NET) heap size after the last GC");
        // Per generated token (deltas over a run ÷ tokens), these show what streaming costs besides the forward,
        // independent of the machine's load: garbage made, thread-pool hops, collections.
        _allocated = f.CreateGauge("supercluster_dotnet_allocated_bytes", "Bytes allocated on the managed heap since the process started (all threads)");
        _workItems = f.CreateGauge("supercluster_dotnet_threadpool_work_items", "Thread-pool work items completed since the process started");
        _gcs = f.CreateGauge("supercluster_dotnet_gen0_collections", "Generation-0 garbage collections since the process started");
        _latency = f.CreateHistogram("supercluster_request_duration_seconds", "Request latency by endpoint", new HistogramConfiguration
        {
            LabelNames = ["endpoint"],
            Buckets = Histogram.ExponentialBuckets(0.005, 2, 14), // 5 ms … 41 s
        });
        Registry.AddBeforeCollectCallback(Update);
    }

    public CollectorRegistry Registry { get; }

    public void Attach(BatchScheduler scheduler) => _scheduler = scheduler;

    void Update()
    {
        using (var p = Process.GetCurrentProcess()) _resident.Set(p.WorkingSet64);
        _managed.Set(GC.GetGCMemoryInfo().HeapSizeBytes);
        _allocated.Set(GC.GetTotalAllocatedBytes());
        _workItems.Set(ThreadPool.CompletedWorkItemCount);
        _gcs.Set(GC.CollectionCount(0));
        if (_scheduler is not { } s) return;
        _queue.Set(s.QueueDepth);
        _active.Set(s.Active);
        long now = Stopwatch.GetTimestamp(), tokens = s.TokensGenerated;
        lock (_window)
        {
            _window.Enqueue((now, tokens));
            while (_window.Count > 1 && Stopwatch.GetElapsedTime(_window.Peek().Ticks, now).TotalSeconds > 5) _window.Dequeue();
            var (t0, n0) = _window.Peek();
            double dt = Stopwatch.GetElapsedTime(t0, now).TotalSeconds;
            _tokensPerSecond.Set(dt > 0 ? (tokens - n0) / dt : 0);
        }
    }

    public void Request(string endpoint, int code, TimeSpan elapsed)
    {
        _requests.WithLabels(endpoint, code.ToString()).Inc();
        _latency.WithLabels(endpoint).Observe(elapsed.TotalSeconds);
    }

    public void Generated(int completionTokens, int promptTokens)
    {
        _generated.Inc(completionTokens);
        _prompt.Inc(promptTokens);
    }

    public void InFlight(int n) => _inFlight.Set(n);
}
