using System.Collections.Concurrent;
using System.Diagnostics;
using Supercluster.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace Supercluster.Inference;

/// <summary>Thrown when the scheduler's queue is full (the server answers 429).</summary>
public sealed class SchedulerBusyException(string message) : Exception(message);

/// <summary>
/// Continuous batching: one thread owns the model and, per iteration, prefills newly admitted sequences (one at a
/// time, each into its own cache slot) and then runs ONE batched decode forward over all active sequences.
/// Sequences join and leave between steps; a cancelled sequence (client gone, stop string seen) frees its slot at
/// the next step. One-at-a-time and batched generation use the same code path (a single client is a batch of one).
/// </summary>
public sealed class BatchScheduler : IDisposable
{
    readonly CausalLM _model;
    readonly Device _device;
    readonly BatchKvCache _cache;
    readonly ConcurrentQueue<GenerationHandle> _pending = new();
    readonly List<GenerationHandle> _active = [];
    readonly SemaphoreSlim _wake = new(0);
    readonly Thread _thread;
    readonly CancellationTokenSource _stop = new();
    long _tokensGenerated, _steps;
    int _pendingCount, _activeCount;

    public BatchScheduler(CausalLM model, Device device, int maxBatch = 32, int maxQueue = 64)
    {
        if (maxBatch < 1) throw new BadInputException($"max batch = {maxBatch}, expected ≥ 1");
        _model = model;
        _device = device;
        MaxBatch = maxBatch;
        MaxQueue = maxQueue;
        model.eval();
        _cache = new BatchKvCache(model.Config, maxBatch, device, model.parameters().First().dtype);
        _thread = new Thread(Loop) { IsBackground = true, Name = "supercluster-scheduler" };
        _thread.Start();
    }

    public int MaxBatch { get; }
    public int MaxQueue { get; }
    public ModelConfig Config => _model.Config;
    /// <summary>Requests waiting for a slot.</summary>
    public int QueueDepth => Volatile.Read(ref _pendingCount);
    /// <summary>Sequences being decoded.</summary>
    public int Active => Volatile.Read(ref _activeCount);
    public long TokensGenerated => Interlocked.Read(ref _tokensGenerated);
    public long DecodeSteps => Interlocked.Read(ref _steps);
    /// <summary>Pause after each decode step (tests and demos: makes a tiny model as slow as a big one). Default none.</summary>
    public TimeSpan StepDelay { get; set; }
    /// <summary>Called on the scheduler thread after each token (for metrics).</summary>
    public event Action<int>? TokensEmitted;

    /// <summary>Queues a sequence; read its tokens from the handle. Throws <see cref="SchedulerBusyException"/> when the queue is full.</summary>
    public GenerationHandle Submit(IReadOnlyList<int> prompt, SamplingOptions options, CancellationToken cancel = default) =>
        SubmitGroup(prompt, [(options, cancel)])[0];

    /// <summary>
    /// Queues several sequences of one prompt (a request's n choices) at once: they are admitted together when slots
    /// allow, so a request alone on the server meets the same batch at every step and its seeded samples repeat exactly
    /// (batched matmuls of different sizes may round differently in the last bit, enough to flip a sample).
    /// </summary>
    public GenerationHandle[] SubmitGroup(IReadOnlyList<int> prompt, IReadOnlyList<(SamplingOptions Options, CancellationToken Cancel)> choices)
    {
        foreach (var c in choices) c.Options.Validate();
        if (prompt.Count == 0) throw new BadInputException("prompt is empty: give at least one token");
        if (prompt.Count > Config.SeqLen) throw new BadInputException($"prompt of {prompt.Count} tokens exceeds the model context {Config.SeqLen}");
        if (Interlocked.Add(ref _pendingCount, choices.Count) > MaxQueue)
        {
            Interlocked.Add(ref _pendingCount, -choices.Count);
            throw new SchedulerBusyException($"too many requests: {MaxQueue} already waiting for one of {MaxBatch} batch slots");
        }
        var ids = prompt.ToArray();
        var handles = choices.Select(c => new GenerationHandle(ids, c.Options, c.Cancel)).ToArray();
        lock (_admitGate)
            foreach (var h in handles) _pending.Enqueue(h);
        _wake.Release();
        return handles;
    }

    readonly object _admitGate = new();

    void Loop()
    {
        using var _ = no_grad();
        while (!_stop.IsCancellationRequested)
        {
            if (_active.Count == 0 && _pending.IsEmpty)
            {
                try { _wake.Wait(_stop.Token); } catch (OperationCanceledException) { break; }
                continue;
            }
            try
            {
                Admit();
                DropCancelled();
                if (_active.Count > 0) DecodeStep();
            }
            catch (Exception e)
            {
                // A failing step fails the sequences in it, never the server.
                foreach (var h in _active.ToArray()) Finish(h, "error", e);
            }
        }
        foreach (var h in _active.ToArray()) Finish(h, "error", new OperationCanceledException("server stopping"));
        while (_pending.TryDequeue(out var p)) p.Complete("error", new OperationCanceledException("server stopping"));
    }

    void Admit()
    {
        var admitted = new List<GenerationHandle>();
        lock (_admitGate)                                  // a group is queued whole or not yet
            while (admitted.Count < _cache.FreeSlots && _pending.TryDequeue(out var h)) admitted.Add(h);
        foreach (var h in admitted)
        {
            Interlocked.Decrement(ref _pendingCount);
            if (h.Cancel.IsCancellationRequested) { h.Complete("cancelled", null); continue; }
            if (h.Options.MaxNewTokens == 0) { h.Complete("length", null); continue; }
            h.Slot = _cache.Rent();
            _active.Add(h);
            Volatile.Write(ref _activeCount, _active.Count);
            h.Generator = new Generator((ulong)h.Options.Seed, _device);
            h.Picker = new SequenceSampler(h.Options, h.Generator);
            try
            {
                using var scope = NewDisposeScope();
                _cache.Begin([h.Slot], h.Prompt.Length);
                var ids = tensor(h.Prompt.Select(i => (long)i).ToArray(), device: _device).unsqueeze(0);
                var logits = _model.Forward(ids, _cache);                                    // [1, T, V]
                Emit(h, h.Picker.Prefilled(logits[0], h.Prompt));
            }
            catch (Exception e) { Finish(h, "error", e); }
            finally { _cache.End(); }
        }
    }

    void DropCancelled()
    {
        foreach (var h in _active.ToArray())
            if (h.Cancel.IsCancellationRequested) Finish(h, "cancelled", null);
    }

    void DecodeStep()
    {
        var batch = _active.ToArray();
        using var scope = NewDisposeScope();
        _cache.Begin(batch.Select(h => h.Slot).ToArray(), 1);
        try
        {
            var ids = tensor(batch.Select(h => (long)h.Last).ToArray(), device: _device).unsqueeze(1);   // [B, 1]
            var logits = _model.Forward(ids, _cache).select(1, 0).to(ScalarType.Float32);                // [B, V]
            bool finite = logits.isfinite().all().item<bool>();
            long[]? greedy = finite && batch.Any(h => SequenceSampler.PlainGreedy(h.Options)) ? logits.argmax(1).cpu().data<long>().ToArray() : null;
            Interlocked.Increment(ref _steps);
            for (int i = 0; i < batch.Length; i++)
            {
                var h = batch[i];
                // One sequence's failure (e.g. non-finite logits of its row) ends that sequence only, never the batch.
                try
                {
                    int next = greedy is not null && SequenceSampler.PlainGreedy(h.Options) ? (int)greedy[i] : h.Picker!.Next(logits[i]);
                    Emit(h, next);
                }
                catch (Exception e) { Finish(h, "error", e); }
            }
        }
        finally { _cache.End(); }
        if (StepDelay > TimeSpan.Zero) Thread.Sleep(StepDelay);
    }

    void Emit(GenerationHandle h, int token)
    {
        h.Add(token);
        Interlocked.Increment(ref _tokensGenerated);
        TokensEmitted?.Invoke(1);
        if (token == h.Options.StopToken) Finish(h, "stop", null);
        else if (h.Generated >= h.Options.MaxNewTokens || _cache.LengthOf(h.Slot) >= Config.SeqLen) Finish(h, "length", null);
    }

    void Finish(GenerationHandle h, string reason, Exception? error)
    {
        if (_active.Remove(h)) _cache.Release(h.Slot);
        Volatile.Write(ref _activeCount, _active.Count);
        h.Generator?.Dispose();
        h.Complete(reason, error);
    }

    public void Dispose()
    {
        _stop.Cancel();
        _thread.Join(TimeSpan.FromSeconds(10));
        _cache.Dispose();
    }
}

/// <summary>One sequence in the scheduler: its new tokens arrive on <see cref="Tokens"/>; <see cref="FinishReason"/> is set before the channel completes.</summary>
public sealed class GenerationHandle
{
    readonly System.Threading.Channels.Channel<int> _tokens = System.Threading.Channels.Channel.CreateUnbounded<int>(new() { SingleReader = true, SingleWriter = true });

    internal GenerationHandle(int[] prompt, SamplingOptions options, CancellationToken cancel)
    {
        Prompt = prompt;
        Options = options;
        Cancel = cancel;
        Started = Stopwatch.GetTimestamp();
    }

    public int[] Prompt { get; }
    public SamplingOptions Options { get; }
    public CancellationToken Cancel { get; }
    public long Started { get; }
    public System.Threading.Channels.ChannelReader<int> Tokens => _tokens.Reader;
    /// <summary>stop (stop token), length (max tokens or context), cancelled, or error.</summary>
    public string? FinishReason { get; private set; }
    public Exception? Error { get; private set; }
    public int Generated { get; private set; }
    internal int Slot = -1;
    internal int Last;
    internal Generator? Generator;
    /// <summary>Where logits become this sequence's next token (processors, constraint, logprobs); set at admission.</summary>
    public SequenceSampler? Picker { get; internal set; }

    internal void Add(int token)
    {
        Last = token;
        Generated++;
        _tokens.Writer.TryWrite(token);
    }

    internal void Complete(string reason, Exception? error)
    {
        if (FinishReason is not null) return;
        FinishReason = reason;
        Error = error;
        _tokens.Writer.TryComplete(error is null || reason == "cancelled" ? null : error);
    }

    /// <summary>All new tokens (for non-streaming callers).</summary>
    public async Task<List<int>> ReadAllAsync(CancellationToken ct = default)
    {
        var list = new List<int>();
        await foreach (var t in Tokens.ReadAllAsync(ct)) list.Add(t);
        return list;
    }
}
