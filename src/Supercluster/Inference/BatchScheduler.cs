using System.Collections.Concurrent;
using System.Diagnostics;
using Supercluster.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace Supercluster.Inference;

/// <summary>Thrown when the scheduler's queue is full (the server answers 429).</summary>
public sealed class SchedulerBusyException(string message) : Exception(message);

/// <summary>
/// Continuous batching: one thread owns the model and, per iteration, (1) admits waiting sequences into free cache
/// slots (a prefix-cache hit copies the prompt's cached blocks in), (2) runs one prefill forward over the next chunks
/// of the prompts not yet prefilled (at most <see cref="PrefillChunk"/> prompt tokens per iteration, so a long prompt
/// is prefilled over several iterations instead of stalling the running streams), and (3) runs ONE batched decode
/// forward over all sequences past their prompt. Sequences join and leave between steps; a cancelled sequence (client
/// gone, stop string seen) frees its slot at the next step. One-at-a-time and batched generation use the same code
/// path (a single client is a batch of one).
/// </summary>
public sealed class BatchScheduler : IDisposable
{
    readonly CausalLM _model;
    readonly Device _device;
    readonly BatchKvCache _cache;
    readonly PrefixCache? _prefix;
    readonly ConcurrentQueue<GenerationHandle> _pending = new();
    readonly List<GenerationHandle> _active = [];         // in admission order
    readonly SemaphoreSlim _wake = new(0);
    readonly Thread _thread;
    readonly CancellationTokenSource _stop = new();
    readonly TokenDelivery _delivery = new();
    long _tokensGenerated, _steps, _prefillForwards, _mixedForwards;
    int _pendingCount, _activeCount;

    /// <param name="prefillChunk">Prompt tokens prefilled per iteration (0 = every waiting prompt whole).</param>
    /// <param name="prefixCacheBytes">Memory for cached prompt blocks (0 = no prefix caching).</param>
    /// <param name="prefixBlock">Tokens per prefix-cache block.</param>
    public BatchScheduler(CausalLM model, Device device, int maxBatch = 32, int maxQueue = 64, int prefillChunk = 0, long prefixCacheBytes = 0, int prefixBlock = 16)
    {
        if (maxBatch < 1) throw new BadInputException($"max batch = {maxBatch}, expected ≥ 1");
        if (prefillChunk < 0) throw new BadInputException($"prefill chunk = {prefillChunk}, expected ≥ 0 (0 = whole prompts)");
        _model = model;
        _device = device;
        MaxBatch = maxBatch;
        MaxQueue = maxQueue;
        PrefillChunk = prefillChunk;
        model.eval();
        _cache = new BatchKvCache(model.Config, maxBatch, device, model.parameters().First().dtype);
        _cache.PackProjections(model);          // the served model's weights do not change (an adapter is merged into a model of its own)
        if (prefixCacheBytes > 0) _prefix = new PrefixCache(model.Config.NLayer, prefixCacheBytes, prefixBlock);
        _thread = new Thread(Loop) { IsBackground = true, Name = "supercluster-scheduler" };
        _thread.Start();
    }

    public int MaxBatch { get; }
    public int MaxQueue { get; }
    public int PrefillChunk { get; }
    /// <summary>
    /// Prompt chunks run inside the decode step's forward while sequences decode (one mixed forward, default), instead of
    /// a separate prefill forward before it. Prompts wanting prompt logprobs (echo) always take the separate forward.
    /// </summary>
    public bool MixedPrefill { get; set; } = true;
    public ModelConfig Config => _model.Config;
    /// <summary>Requests waiting for a slot.</summary>
    public int QueueDepth => Volatile.Read(ref _pendingCount);
    /// <summary>Sequences being prefilled or decoded.</summary>
    public int Active => Volatile.Read(ref _activeCount);
    public long TokensGenerated => Interlocked.Read(ref _tokensGenerated);
    public long DecodeSteps => Interlocked.Read(ref _steps);
    public long PrefillForwards => Interlocked.Read(ref _prefillForwards);
    /// <summary>Decode steps that also prefilled prompt chunks (<see cref="MixedPrefill"/>; counted in both of the above).</summary>
    public long MixedForwards => Interlocked.Read(ref _mixedForwards);
    /// <summary>Prompt tokens served from the prefix cache, and looked up there (whole blocks); 0 without one.</summary>
    public (long Hit, long Lookup) PrefixCacheTokens { get { var p = _prefix; return p is null ? (0, 0) : (p.HitTokens, p.LookupTokens); } }
    /// <summary>Pause after each decode step (tests and demos: makes a tiny model as slow as a big one). Default none.</summary>
    public TimeSpan StepDelay { get; set; }
    /// <summary>Called on the scheduler thread after each step with the number of tokens it produced (for metrics).</summary>
    public event Action<int>? TokensEmitted;
    /// <summary>Set before requests arrive to time each phase of the loop (<c>serve --profile</c>); null = not timed.</summary>
    public SchedulerProfile? Profile { get => _profile; set { _profile = value; _cache.TimeWrites = value is not null; } }
    SchedulerProfile? _profile;
    long _lap;                                  // the profile's running lap start (scheduler thread)
    bool _decoding;                             // inside DecodeStep: Sample's laps count as decode phases

    void Lap(SchedulerProfile.Phase phase) => _profile?.Lap(phase, ref _lap);

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
        var handles = choices.Select(c => new GenerationHandle(ids, c.Options, c.Cancel) { Delivery = _delivery }).ToArray();
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
            long start = _lap = Stopwatch.GetTimestamp();
            long allocated = _profile is null ? 0 : GC.GetAllocatedBytesForCurrentThread();
            try
            {
                Admit();
                DropCancelled();
                Lap(SchedulerProfile.Phase.Admit);
                // A mixed forward is one sequence of decode rows + chunk tokens: the model takes at most its context.
                int decoding = CountDecoding();
                bool mix = MixedPrefill && decoding > 0 && decoding < Config.SeqLen;
                var plan = PlanPrefill(mix ? Config.SeqLen - decoding : long.MaxValue);
                int produced;
                if (mix && plan.Count > 0 && !plan.Any(r => r.H.WantsPromptLogprobs))
                    produced = MixedStep(plan);
                else
                {
                    produced = 0;
                    if (plan.Count > 0)
                        foreach (var group in plan.GroupBy(r => BitLength(r.N)))      // rows padded to their group's longest chunk
                            produced += PrefillGroup(group.OrderBy(r => r.H.Slot).ToArray());
                    Lap(SchedulerProfile.Phase.Prefill);
                    if (CountDecoding() > 0) produced += DecodeStep();
                }
                if (produced > 0) TokensEmitted?.Invoke(produced);
                Lap(SchedulerProfile.Phase.Emit);
                _profile?.Loop(Stopwatch.GetTimestamp() - start, GC.GetAllocatedBytesForCurrentThread() - allocated);
            }
            catch (Exception e)
            {
                // A failing step fails the sequences in it, never the server.
                foreach (var h in _active.ToArray()) Finish(h, "error", e);
            }
            finally { _delivery.Flush(); }
        }
        foreach (var h in _active.ToArray()) Finish(h, "error", new OperationCanceledException("server stopping"));
        while (_pending.TryDequeue(out var p)) p.Complete("error", new OperationCanceledException("server stopping"));
        _delivery.Flush();
    }

    /// <summary>Waiting sequences take free slots (no compute here: their prompts are prefilled by <see cref="Prefill"/>).</summary>
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
            h.Generator = new Generator((ulong)h.Options.Seed, _device);
            h.Picker = new SequenceSampler(h.Options, h.Generator);
            _active.Add(h);
        }
        Volatile.Write(ref _activeCount, _active.Count);
    }

    void DropCancelled()
    {
        foreach (var h in _active.ToArray())
            if (h.Cancel.IsCancellationRequested) Finish(h, "cancelled", null);
    }

    /// <summary>
    /// The next prompt chunks to prefill (oldest sequences first, at most <see cref="PrefillChunk"/> and <paramref name="limit"/> tokens in all; a
    /// prefix-cache hit is restored into the slot first). They run as one forward per length class of chunks within a
    /// factor of 2 (<see cref="PrefillGroup"/>), or, when sequences are decoding, inside their decode step
    /// (<see cref="MixedStep"/>); a sequence whose prompt is then complete samples its first token.
    /// </summary>
    List<(GenerationHandle H, int N)> PlanPrefill(long limit)
    {
        bool waiting = false;
        foreach (var h in _active) waiting |= h.Prefilled != h.Prompt.Length;
        if (!waiting) return NoPlan;                      // the usual decode step: nothing to plan, nothing allocated
        long budget = Math.Min(PrefillChunk > 0 ? PrefillChunk : long.MaxValue, limit);
        var plan = new List<(GenerationHandle H, int N)>();
        var leaders = new HashSet<ulong>();
        foreach (var h in _active)
        {
            if (h.Prefilled == h.Prompt.Length || budget <= 0) continue;
            if (_prefix is not null && !h.Restored && h.Prompt.Length > 1 && !h.WantsPromptLogprobs)
            {
                // Sequences sharing a first block (n choices, one system prompt) start one after another: the first
                // stores the shared blocks, the others then hit them instead of computing them again.
                if (_prefix.FirstBlock(h.Prompt) is { } first && !leaders.Add(first)) continue;
                h.Prefilled = _prefix.Restore(h.Prompt, h.Prompt.Length - 1, _cache, h.Slot);
            }
            else if (_prefix is not null && h.Prefilled < h.Prompt.Length && _prefix.FirstBlock(h.Prompt) is { } going)
                leaders.Add(going);                                        // mid-prefill: followers wait for its blocks
            h.Restored = true;
            int n = (int)Math.Min(h.Prompt.Length - h.Prefilled, budget);
            plan.Add((h, n));
            budget -= n;
        }
        return plan;
    }

    static readonly List<(GenerationHandle H, int N)> NoPlan = [];

    int CountDecoding()
    {
        int n = 0;
        foreach (var h in _active) if (h.Decoding) n++;
        return n;
    }

    /// <summary>The decoding sequences in slot order (consecutive slots: the KV cache reads them in place).</summary>
    GenerationHandle[] DecodingBySlot()
    {
        var batch = new GenerationHandle[CountDecoding()];
        int i = 0;
        foreach (var h in _active) if (h.Decoding) batch[i++] = h;
        Array.Sort(batch, static (a, b) => a.Slot.CompareTo(b.Slot));
        return batch;
    }

    static int BitLength(int n) => 32 - System.Numerics.BitOperations.LeadingZeroCount((uint)n);

    int PrefillGroup((GenerationHandle H, int N)[] rows)
    {
        var done = new List<int>();
        using var scope = NewDisposeScope();
        try
        {
            _cache.Begin(rows.Select(r => r.H.Slot).ToArray(), rows.Select(r => (long)r.N).ToArray());
            int t = rows.Max(r => r.N);
            var ids = new long[rows.Length * t];
            for (int i = 0; i < rows.Length; i++)
                for (int j = 0; j < rows[i].N; j++) ids[i * t + j] = rows[i].H.Prompt[rows[i].H.Prefilled + j];
            var logits = _model.Forward(tensor(ids, device: _device).view(rows.Length, t), _cache);        // [B, T, V]
            Interlocked.Increment(ref _prefillForwards);
            for (int i = 0; i < rows.Length; i++)
            {
                var (h, n) = rows[i];
                h.Prefilled += n;
                _prefix?.Store(h.Prompt, h.Prefilled, _cache, h.Slot);
                // Prompt logprobs (echo) need every prompt position's logits: kept per chunk (such rows skip the prefix cache).
                if (h.WantsPromptLogprobs) h.PromptLogits.Add(logits[i].narrow(0, 0, n).to(ScalarType.Float32).detach().clone().DetachFromDisposeScope());
                if (h.Prefilled == h.Prompt.Length) done.Add(i);
            }
            if (done.Count == 0) return 0;
            // The last real position of each finished row: [D, V].
            var last = logits.index_select(0, tensor(done.Select(i => (long)i).ToArray(), device: _device))
                .gather(1, tensor(done.Select(i => (long)rows[i].N - 1).ToArray(), device: _device).view(-1, 1, 1).expand(-1, 1, logits.shape[2]))
                .squeeze(1).to(ScalarType.Float32);
            var echo = done.Where(i => rows[i].H.WantsPromptLogprobs).ToList();
            foreach (int i in echo)
            {
                var h = rows[i].H;
                try
                {
                    using var all = cat(h.PromptLogits, 0);                                               // [T, V]
                    Emit(h, h.Picker!.Prefilled(all, h.Prompt));
                }
                catch (Exception e) { Finish(h, "error", e); }
                finally { foreach (var chunk in h.PromptLogits) chunk.Dispose(); h.PromptLogits.Clear(); }
            }
            if (echo.Count == done.Count) return echo.Count;
            var rest = done.Where(i => !rows[i].H.WantsPromptLogprobs).ToList();
            var restLast = rest.Count == done.Count ? last : last.index_select(0, tensor(rest.Select(i => (long)done.IndexOf(i)).ToArray(), device: _device));
            return echo.Count + Sample(rest.Select(i => rows[i].H).ToArray(), restLast);
        }
        catch (Exception e)
        {
            foreach (var (h, _) in rows) Finish(h, "error", e);
            return 0;
        }
        finally { _cache.End(); }
    }

    int DecodeStep()
    {
        var batch = DecodingBySlot();
        var slots = new int[batch.Length];
        var last = new long[batch.Length];
        for (int i = 0; i < batch.Length; i++) (slots[i], last[i]) = (batch[i].Slot, batch[i].Last);
        int produced;
        using (var scope = NewDisposeScope())
        {
            _cache.Begin(slots, 1);
            try
            {
                _decoding = true;
                var ids = tensor(last, [batch.Length, 1], device: _device);                                       // [B, 1]
                Lap(SchedulerProfile.Phase.Begin);
                var logits = _model.Forward(ids, _cache).select(1, 0).to(ScalarType.Float32);                // [B, V]
                Lap(SchedulerProfile.Phase.Forward);
                _profile?.Move(SchedulerProfile.Phase.Forward, SchedulerProfile.Phase.KvWrite, _cache.TakeWriteTicks());
                _profile?.Step(batch.Length);
                Interlocked.Increment(ref _steps);
                produced = Sample(batch, logits);
                Lap(SchedulerProfile.Phase.Emit);
            }
            finally { _cache.End(); _decoding = false; }
        }
        Lap(SchedulerProfile.Phase.Free);
        if (StepDelay > TimeSpan.Zero) Thread.Sleep(StepDelay);
        return produced;
    }

    /// <summary>
    /// ONE forward over the decoding sequences' next tokens and the planned prompt chunks, laid side by side as a [1, N]
    /// sequence (<see cref="BatchKvCache.BeginMixed"/>): the running streams do not wait for a separate prefill forward,
    /// and the chunks' rows cost their arithmetic, not another forward's fixed costs. Then one sampling pass picks the
    /// decode rows' next tokens and the first token of each sequence whose prompt is complete.
    /// </summary>
    int MixedStep(List<(GenerationHandle H, int N)> plan)
    {
        var batch = DecodingBySlot();
        var chunks = plan.OrderBy(r => r.H.Slot).ToArray();
        int produced;
        using (var scope = NewDisposeScope())
        {
            _cache.BeginMixed(batch.Select(h => h.Slot).ToArray(), chunks.Select(r => (r.H.Slot, (long)r.N)).ToArray());
            try
            {
                _decoding = true;
                var ids = new long[batch.Length + chunks.Sum(r => r.N)];
                for (int i = 0; i < batch.Length; i++) ids[i] = batch[i].Last;
                int at = batch.Length;
                foreach (var (h, n) in chunks)
                    for (int j = 0; j < n; j++) ids[at++] = h.Prompt[h.Prefilled + j];
                Lap(SchedulerProfile.Phase.Begin);
                var logits = _model.Forward(tensor(ids, [1, ids.Length], device: _device), _cache).select(0, 0);    // [N, V]
                Lap(SchedulerProfile.Phase.Forward);
                _profile?.Move(SchedulerProfile.Phase.Forward, SchedulerProfile.Phase.KvWrite, _cache.TakeWriteTicks());
                _profile?.Step(batch.Length);
                Interlocked.Increment(ref _steps);
                Interlocked.Increment(ref _prefillForwards);
                Interlocked.Increment(ref _mixedForwards);
                var rows = Enumerable.Range(0, batch.Length).Select(i => (long)i).ToList();
                var picking = batch.ToList();
                long offset = batch.Length;
                foreach (var (h, n) in chunks)
                {
                    h.Prefilled += n;
                    _prefix?.Store(h.Prompt, h.Prefilled, _cache, h.Slot);
                    offset += n;
                    if (h.Prefilled == h.Prompt.Length) { rows.Add(offset - 1); picking.Add(h); }          // its last prompt token
                }
                produced = Sample([.. picking], logits.index_select(0, tensor(rows.ToArray(), device: _device)).to(ScalarType.Float32));
                Lap(SchedulerProfile.Phase.Emit);
            }
            finally { _cache.End(); _decoding = false; }
        }
        Lap(SchedulerProfile.Phase.Free);
        if (StepDelay > TimeSpan.Zero) Thread.Sleep(StepDelay);
        return produced;
    }

    /// <summary>Picks the next token of each sequence from its logits row [B, V], the whole batch at once; one sequence's failure (e.g. non-finite logits) ends that sequence only.</summary>
    /// <remarks>
    /// Plain rows (temperature / top-k / top-p only) are sampled together by <see cref="BatchSampler"/>; the others
    /// (penalties, logit_bias, logprobs, structured output) by their own <see cref="SequenceSampler"/>, row by row.
    /// </remarks>
    int Sample(GenerationHandle[] batch, Tensor logits)
    {
        var plain = Enumerable.Range(0, batch.Length).Where(i => batch[i].Plain).ToArray();
        var picks = new (int Token, Exception? Error)[batch.Length];
        if (plain.Length > 0)
        {
            var rows = plain.Length == batch.Length ? logits : logits.index_select(0, tensor(plain.Select(i => (long)i).ToArray(), device: logits.device));
            var p = BatchSampler.Pick(rows, plain.Select(i => batch[i].Options).ToArray(), plain.Select(i => batch[i].Generator!).ToArray(),
                plain.Select(i => (IReadOnlyList<int>)batch[i].Output).ToArray(), plain.Select(_ => true).ToArray());
            for (int j = 0; j < plain.Length; j++) picks[plain[j]] = p[j];
        }
        for (int i = 0; i < batch.Length; i++)
        {
            if (batch[i].Plain) continue;
            try { picks[i] = (batch[i].Picker!.Next(logits[i]), null); }
            catch (Exception e) { picks[i] = (-1, e); }
        }
        if (_decoding) Lap(SchedulerProfile.Phase.Sample);
        for (int i = 0; i < batch.Length; i++)
        {
            if (picks[i].Error is { } e) Finish(batch[i], "error", e);
            else Emit(batch[i], picks[i].Token);
        }
        return batch.Length;
    }

    void Emit(GenerationHandle h, int token)
    {
        h.Add(token);
        Interlocked.Increment(ref _tokensGenerated);
        if (token == h.Options.StopToken) Finish(h, "stop", null);
        else if (h.Generated >= h.Options.MaxNewTokens || _cache.LengthOf(h.Slot) >= Config.SeqLen) Finish(h, "length", null);
    }

    void Finish(GenerationHandle h, string reason, Exception? error)
    {
        if (_active.Remove(h))
        {
            _cache.Release(h.Slot);
            // Keep the running sequences in consecutive slots: the highest one moves into the hole.
            var last = _active.MaxBy(a => a.Slot);
            if (last is not null && last.Slot > h.Slot)
            {
                _cache.Move(last.Slot, h.Slot);
                last.Slot = h.Slot;
            }
        }
        Volatile.Write(ref _activeCount, _active.Count);
        h.Generator?.Dispose();
        h.Complete(reason, error);
    }

    public void Dispose()
    {
        _stop.Cancel();
        _thread.Join(TimeSpan.FromSeconds(10));
        _delivery.Dispose();
        _cache.Dispose();
        _prefix?.Dispose();
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
        Plain = BatchSampler.IsPlain(options);
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
    /// <summary>Prompt tokens in the cache (prefilled or restored from the prefix cache).</summary>
    internal int Prefilled;
    /// <summary>The prefix cache was consulted (once, before the first prefill chunk).</summary>
    internal bool Restored;
    internal readonly List<int> Output = [];
    /// <summary>Sampled by <see cref="BatchSampler"/>'s vectorised path (decided once, not per step).</summary>
    internal readonly bool Plain;
    internal bool Decoding => Prefilled == Prompt.Length && Generated > 0;
    /// <summary>Where logits become this sequence's next token (processors, constraint, logprobs); set at admission.</summary>
    public SequenceSampler? Picker { get; internal set; }
    internal bool WantsPromptLogprobs => Options.PromptLogprobs && Options.TopLogprobs >= 0;
    /// <summary>Prompt logits [n, V] per prefill chunk, kept only for prompt logprobs.</summary>
    internal readonly List<Tensor> PromptLogits = [];

    /// <summary>Hands the scheduler's tokens and completions to the reader in order, a step at a time (null: at once).</summary>
    internal TokenDelivery? Delivery;

    internal void Add(int token)
    {
        Last = token;
        Generated++;
        Output.Add(token);
        if (Delivery is { } d) d.Post(this, token);
        else Deliver(token);
    }

    internal void Complete(string reason, Exception? error)
    {
        if (FinishReason is not null) return;
        FinishReason = reason;
        Error = error;
        if (Delivery is { } d) d.Post(this, -1);
        else Deliver(-1);
    }

    /// <summary>A token (≥ 0) into the channel, or −1: the channel completes (after <see cref="FinishReason"/> was set).</summary>
    internal void Deliver(int token)
    {
        if (token >= 0) _tokens.Writer.TryWrite(token);
        else _tokens.Writer.TryComplete(Error is null || FinishReason == "cancelled" ? null : Error);
    }

    /// <summary>All new tokens (for non-streaming callers).</summary>
    public async Task<List<int>> ReadAllAsync(CancellationToken ct = default)
    {
        var list = new List<int>();
        await foreach (var t in Tokens.ReadAllAsync(ct)) list.Add(t);
        return list;
    }
}

/// <summary>
/// Moves a step's tokens from the scheduler thread to their readers on a thread of its own: writing into a channel
/// whose reader waits wakes a thread-pool worker, and 16 such wake-ups per step cost the scheduler thread ~0.5 ms on a
/// loaded 2-core machine (`serve --profile`, emit) — a fifth of a small model's batch-16 step. Here the scheduler
/// thread appends to a list and wakes one thread per step; per handle, tokens and the completion keep their order.
/// A step of one row (a lone stream) is written by the scheduler thread itself when nothing is still in flight: one
/// wake-up either way, and no second hop before the reader sees its token.
/// </summary>
sealed class TokenDelivery : IDisposable
{
    List<(GenerationHandle H, int Token)> _step = [];                  // scheduler thread only
    readonly ConcurrentQueue<List<(GenerationHandle H, int Token)>> _ready = new();
    readonly SemaphoreSlim _signal = new(0);
    readonly Thread _thread;
    volatile bool _stopping;
    int _inFlight;                                                      // lists queued and not yet written

    public TokenDelivery()
    {
        _thread = new Thread(Run) { IsBackground = true, Name = "supercluster-delivery" };
        _thread.Start();
    }

    /// <summary>A token (≥ 0) or the completion (−1) of <paramref name="h"/>; sent at the next <see cref="Flush"/>.</summary>
    public void Post(GenerationHandle h, int token) => _step.Add((h, token));

    /// <summary>Sends what was posted since the last call (the scheduler calls it once per iteration).</summary>
    public void Flush()
    {
        if (_step.Count == 0) return;
        if (_step.Count == 1 && Volatile.Read(ref _inFlight) == 0)        // every earlier list is written: order holds
        {
            var (h, token) = _step[0];
            _step.Clear();
            h.Deliver(token);
            return;
        }
        Interlocked.Increment(ref _inFlight);
        _ready.Enqueue(_step);
        _step = new(_step.Count);
        _signal.Release();
    }

    void Run()
    {
        while (true)
        {
            _signal.Wait();
            while (_ready.TryDequeue(out var list))
            {
                foreach (var (h, token) in list) h.Deliver(token);
                Interlocked.Decrement(ref _inFlight);
            }
            if (_stopping && _ready.IsEmpty) return;
        }
    }

    public void Dispose()
    {
        Flush();
        _stopping = true;
        _signal.Release();
        _thread.Join(TimeSpan.FromSeconds(10));
    }
}
