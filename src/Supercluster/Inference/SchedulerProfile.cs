using System.Diagnostics;

namespace Supercluster.Inference;

/// <summary>
/// Wall time per phase of the batch scheduler's loop (<c>serve --profile</c>): where a decode step's time goes, so
/// fixed per-step costs (op launches, mask building) can be told from per-row ones (sampling, hand-offs). Timed with
/// <see cref="Stopwatch"/> on the scheduler thread; on CPU torch ops run synchronously, so a phase's time is its own
/// (on CUDA a phase ending in a host copy also waits for the kernels queued before it).
/// </summary>
public sealed class SchedulerProfile
{
    public enum Phase
    {
        /// <summary>Queue → slots, cancelled sequences dropped.</summary>
        Admit,
        /// <summary>Prompt chunks (their forwards, prefix-cache restore/store and first samples).</summary>
        Prefill,
        /// <summary>The decode batch's ids, positions and mask (BatchKvCache.Begin).</summary>
        Begin,
        /// <summary>The model's decode forward, KV writes excluded.</summary>
        Forward,
        /// <summary>New keys/values written into the cache slots (inside the forward).</summary>
        KvWrite,
        /// <summary>Logits → tokens (batched sampling, per-sequence samplers, host copies).</summary>
        Sample,
        /// <summary>Tokens handed to the request tasks; finished sequences release (and compact) their slots.</summary>
        Emit,
        /// <summary>Freeing the step's tensors (its dispose scope) and the cache's per-step tensors.</summary>
        Free,
    }

    static readonly int Phases = Enum.GetValues<Phase>().Length;
    readonly long[] _ticks = new long[Phases];
    long _steps, _rows, _loops, _loopTicks, _loopBytes;

    /// <summary>Adds the time since <paramref name="t0"/> to <paramref name="phase"/> and moves <paramref name="t0"/> to now.</summary>
    public void Lap(Phase phase, ref long t0)
    {
        long now = Stopwatch.GetTimestamp();
        Interlocked.Add(ref _ticks[(int)phase], now - t0);
        t0 = now;
    }

    /// <summary>Takes <paramref name="ticks"/> out of <paramref name="from"/> and gives them to <paramref name="to"/> (a sub-phase timed inside another).</summary>
    public void Move(Phase from, Phase to, long ticks)
    {
        Interlocked.Add(ref _ticks[(int)from], -ticks);
        Interlocked.Add(ref _ticks[(int)to], ticks);
    }

    /// <summary>One decode step over <paramref name="rows"/> sequences.</summary>
    public void Step(int rows)
    {
        Interlocked.Increment(ref _steps);
        Interlocked.Add(ref _rows, rows);
    }

    /// <summary>
    /// One busy iteration of the loop: its whole wall time (phases + what no phase covers) and the bytes the scheduler
    /// thread allocated in it (<see cref="GC.GetAllocatedBytesForCurrentThread"/>: per-row allocations show as bytes per row).
    /// </summary>
    public void Loop(long ticks, long bytes = 0)
    {
        Interlocked.Increment(ref _loops);
        Interlocked.Add(ref _loopTicks, ticks);
        Interlocked.Add(ref _loopBytes, bytes);
    }

    public sealed record Snapshot(long Steps, long Rows, long Loops, double LoopMs, IReadOnlyDictionary<Phase, double> Ms, long LoopBytes = 0)
    {
        /// <summary>One line: per decode step, each phase's mean ms, and the mean batch.</summary>
        public override string ToString()
        {
            if (Steps == 0) return "scheduler profile: no decode steps";
            double per(double ms) => ms / Steps;
            var parts = string.Join(", ", Ms.Select(kv => $"{kv.Key.ToString().ToLowerInvariant()} {per(kv.Value):F3}"));
            double other = LoopMs - Ms.Values.Sum();
            return $"scheduler profile: {Steps} decode steps, {(double)Rows / Steps:F1} rows/step, ms per step: {parts}, other {per(other):F3}, "
                + $"loop {per(LoopMs):F3} ({1000.0 * Rows / Math.Max(LoopMs, 1e-9):F0} tokens/s of scheduler time), allocated {(double)LoopBytes / Steps:F0} B/step";
        }
    }

    /// <summary>The totals so far; <paramref name="reset"/> starts a new window.</summary>
    public Snapshot Take(bool reset)
    {
        double ms(long t) => t * 1000.0 / Stopwatch.Frequency;
        var d = new Dictionary<Phase, double>();
        for (int i = 0; i < Phases; i++) d[(Phase)i] = ms(reset ? Interlocked.Exchange(ref _ticks[i], 0) : Interlocked.Read(ref _ticks[i]));
        long steps = reset ? Interlocked.Exchange(ref _steps, 0) : Interlocked.Read(ref _steps);
        long rows = reset ? Interlocked.Exchange(ref _rows, 0) : Interlocked.Read(ref _rows);
        long loops = reset ? Interlocked.Exchange(ref _loops, 0) : Interlocked.Read(ref _loops);
        long loopTicks = reset ? Interlocked.Exchange(ref _loopTicks, 0) : Interlocked.Read(ref _loopTicks);
        long loopBytes = reset ? Interlocked.Exchange(ref _loopBytes, 0) : Interlocked.Read(ref _loopBytes);
        return new Snapshot(steps, rows, loops, ms(loopTicks), d, loopBytes);
    }
}
