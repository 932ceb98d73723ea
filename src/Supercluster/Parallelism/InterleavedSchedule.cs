namespace Supercluster.Parallelism;

/// <summary>One unit of a rank's pipeline work: the forward or the backward of one micro-batch through one of its chunks.</summary>
public readonly record struct PipelineOp(bool Forward, int Chunk, int MicroBatch);

/// <summary>
/// The interleaved 1F1B schedule (Narayanan et al. 2021 §2.2.2; Megatron-LM's
/// <c>forward_backward_pipelining_with_interleaving</c>): p ranks each hold v model chunks, rank r chunks r, r + p, …
/// (virtual stage c·p + r). Micro-batches go through the chunks in groups of p: forward k runs chunk (k mod p·v) div p on
/// micro-batch (k div p·v)·p + k mod p, backward k the chunks in reverse. Rank r runs (p − r − 1)·2 + (v − 1)·p warm-up
/// forwards (all of them when that reaches m·v), then one forward and one backward alternately, then the remaining
/// backwards. Megatron requires m to be a multiple of p (its microbatch_group_size_per_vp_stage = p).
/// <para>
/// Execution is in lock-step slots: in each slot every rank runs at most the next op of its order whose input has
/// arrived, then sends its output. Every rank computes the same slots, so each knows which neighbour sends to it in each
/// slot; a slot's transfers are two ring shifts (activations forward, gradients backward), each a SendRecv that cannot
/// deadlock, and two ranks exchange at most one tensor per direction per shift (so transfers never need matching by tag).
/// </para>
/// </summary>
public sealed class InterleavedSchedule
{
    public InterleavedSchedule(int ranks, int chunks, int microBatches)
    {
        if (ranks < 2 || chunks < 1 || microBatches < 1 || microBatches % ranks != 0)
            throw new ArgumentException($"interleaved schedule: {ranks} ranks, {chunks} chunks, {microBatches} micro-batches (expected ranks ≥ 2 and micro-batches a multiple of ranks)");
        Ranks = ranks;
        Chunks = chunks;
        MicroBatches = microBatches;
        Orders = [.. Enumerable.Range(0, ranks).Select(r => Order(r, ranks, chunks, microBatches))];
        Slots = Simulate();
    }

    public int Ranks { get; }
    public int Chunks { get; }
    public int MicroBatches { get; }
    /// <summary>Each rank's ops in the order it runs them.</summary>
    public IReadOnlyList<PipelineOp[]> Orders { get; }
    /// <summary>Per slot, per rank: the op it runs (null: idle in that slot).</summary>
    public IReadOnlyList<PipelineOp?[]> Slots { get; }

    /// <summary>Warm-up forwards of rank <paramref name="rank"/>: min((p − r − 1)·2 + (v − 1)·p, m·v).</summary>
    public static int WarmupForwards(int rank, int ranks, int chunks, int microBatches) =>
        Math.Min((ranks - rank - 1) * 2 + (chunks - 1) * ranks, microBatches * chunks);

    /// <summary>Megatron's order of rank <paramref name="rank"/>'s forwards and backwards.</summary>
    public static PipelineOp[] Order(int rank, int ranks, int chunks, int microBatches)
    {
        int total = microBatches * chunks, group = ranks * chunks;
        PipelineOp Op(int k, bool forward)
        {
            int chunk = k % group / ranks;
            return new(forward, forward ? chunk : chunks - 1 - chunk, k / group * ranks + k % ranks);
        }
        int warmup = WarmupForwards(rank, ranks, chunks, microBatches);
        var order = new List<PipelineOp>(2 * total);
        for (int k = 0; k < warmup; k++) order.Add(Op(k, true));
        for (int k = 0; k < total - warmup; k++) { order.Add(Op(warmup + k, true)); order.Add(Op(k, false)); }
        for (int k = total - warmup; k < total; k++) order.Add(Op(k, false));
        return [.. order];
    }

    /// <summary>Virtual stage of chunk <paramref name="chunk"/> on rank <paramref name="rank"/>.</summary>
    public int StageOf(int rank, int chunk) => chunk * Ranks + rank;

    /// <summary>
    /// The chunk of the next rank that takes <paramref name="op"/>'s output (run on <paramref name="rank"/>), or null when
    /// it sends nothing: a forward's activation goes to the next virtual stage (wrapping from the last rank to the first
    /// rank's next chunk), a backward's input gradient to the previous one.
    /// </summary>
    public int? Consumer(int rank, PipelineOp op)
    {
        int stage = StageOf(rank, op.Chunk) + (op.Forward ? 1 : -1);
        return stage < 0 || stage >= Ranks * Chunks ? null : stage / Ranks;
    }

    List<PipelineOp?[]> Simulate()
    {
        var slots = new List<PipelineOp?[]>();
        var next = new int[Ranks];
        // (forward?, virtual stage, micro-batch) of every op that has run in an earlier slot: its output has arrived.
        var done = new HashSet<(bool, int, int)>();
        while (Enumerable.Range(0, Ranks).Any(r => next[r] < Orders[r].Length))
        {
            var slot = new PipelineOp?[Ranks];
            for (int r = 0; r < Ranks; r++)
            {
                if (next[r] == Orders[r].Length) continue;
                var op = Orders[r][next[r]];
                int s = StageOf(r, op.Chunk), last = Ranks * Chunks - 1;
                bool ready = op.Forward
                    ? s == 0 || done.Contains((true, s - 1, op.MicroBatch))
                    : done.Contains((true, s, op.MicroBatch)) && (s == last || done.Contains((false, s + 1, op.MicroBatch)));
                if (ready) { slot[r] = op; next[r]++; }
            }
            if (slot.All(o => o is null))
                throw new InvalidOperationException($"interleaved schedule p={Ranks} v={Chunks} m={MicroBatches} stalls at slot {slots.Count}");
            for (int r = 0; r < Ranks; r++)
                if (slot[r] is { } op) done.Add((op.Forward, StageOf(r, op.Chunk), op.MicroBatch));
            slots.Add(slot);
        }
        return slots;
    }
}
