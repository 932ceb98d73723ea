using Supercluster.Distributed;
using Supercluster.Model;
using Supercluster.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Supercluster.Parallelism;

/// <summary>
/// The pipeline-parallel training step (Narayanan et al. 2021 §2.2, Megatron-LM's non-interleaved 1F1B): the
/// gradient-accumulation micro-batches flow through the stages; stage s runs min(p−s−1, m) warm-up forwards, then one
/// forward and one backward alternately, then the remaining backwards. Activations go forward and their gradients
/// backward point to point over the pipeline group (a forward's send and the next gradient's receive are one SendRecv, so
/// neighbours exchanging never deadlock). Then: the tied table's gradient is summed between the first and the last
/// stage (as Megatron does), gradients are averaged over the stage's data-parallel replicas, the norm is summed over
/// stages (the tied table once), and each stage's optimizer updates its own parameters. A stage may itself be tensor
/// and/or context parallel (<see cref="PipelineStage.Parallel"/>): each TP × CP rank runs its part of every micro-batch
/// and exchanges activations with the same TP × CP rank of the neighbouring stages. With <c>--interleave v</c> the rank
/// runs its v chunks in Megatron-LM's interleaved order instead (<see cref="InterleavedSchedule"/>); the rest is the same.
/// </summary>
public sealed class PipelineSchedule
{
    readonly IReadOnlyList<PipelineStage> _chunks;
    readonly PipelineStage _stage;      // this rank's first chunk: what is per rank (its group, parameters, the tied table)
    readonly TrainStep _step;
    readonly TrainStepOptions _o;
    readonly ICommunicator _pp, _dp;
    readonly ScalarType _wire;          // activations on the wire: fp32 under MPI (it has no bf16 type), else the compute dtype
    InterleavedSchedule? _interleaved;  // made for the step's micro-batch count on first use

    /// <param name="chunks">This rank's stage, or under <c>--interleave v</c> its v chunks (<see cref="PipelineStage.ForRank"/>).</param>
    public PipelineSchedule(IReadOnlyList<PipelineStage> chunks, TrainStep step, TrainStepOptions options)
    {
        _chunks = chunks;
        _stage = chunks[0];
        _step = step;
        _o = options;
        _pp = _stage.Pp;
        _dp = step.DataParallel.Comm;
        _wire = _pp.Backend.Contains("nccl", StringComparison.OrdinalIgnoreCase) ? step.Flat.ComputeDtype : ScalarType.Float32;
    }

    /// <summary>Warm-up forwards of this stage for <paramref name="m"/> micro-batches: min(p − s − 1, m).</summary>
    public static int WarmupForwards(int stage, int stages, int m) => Math.Min(stages - stage - 1, m);

    /// <summary>Bad input: the interleaved schedule runs micro-batches in groups of p (Megatron-LM requires m to be a multiple of p).</summary>
    public static void ValidateMicroBatches(int stages, int interleave, int microBatches)
    {
        if (interleave > 1 && microBatches % stages != 0)
            throw new BadInputException($"--interleave {interleave} with --pp {stages}: {microBatches} micro-batches per step (the gradient accumulation) is not a multiple of {stages}: expected a multiple of --pp (the interleaved schedule runs micro-batches in groups of p); change --total-batch-tokens");
    }

    /// <summary>One optimizer step over <paramref name="m"/> micro-batches (every stage reads them all: the first uses the inputs, the last the targets).</summary>
    public StepResult Step(Action<long[], long[]> next, int m, double lr, PhaseClock? clock)
    {
        using var scope = NewDisposeScope();
        var flat = _step.Flat;
        flat.ZeroGradients();
        var lossSum = zeros(1, device: _step.Device);
        using var mScalar = ((double)m).ToScalar();
        var context = _stage.Parallel?.ContextOf(_o.SeqLen, _step.Device);     // context parallelism: this rank's chunks of every sequence
        var run = new MicroBatches(this, lossSum, mScalar, context, clock);
        if (_chunks.Count == 1) OneForwardOneBackward(run, next, m);
        else Interleaved(run, next, m);
        int p = _stage.Ranks;
        bool lastRank = _stage.Rank == p - 1;

        // The tied table: both ends add the other's gradient (a + b = b + a exactly, so both copies stay identical); under
        // TP each TP rank's pipeline group exchanges its own rows of the table.
        flat.EnsureGradientViews();
        _stage.Parallel?.ReduceSequenceParallelGradients(flat);
        if (_stage.HoldsTied)
        {
            var item = flat.Items.First(i => i.Name == _stage.Tied);
            var mine = flat.Gradients.narrow(0, item.Offset, item.Length);
            var theirs = empty_like(mine);
            int other = lastRank ? 0 : p - 1;
            _pp.SendRecv(mine, other, theirs, other);
            mine.add_(theirs);
        }

        var (grad, norm) = _step.DataParallel.ReduceGradients();
        // Sum of squares over stages (each already summed over its TP group), the tied table counted on the first stage only.
        var sq = norm.mul(norm);
        if (_stage.HoldsTied && lastRank) sq.sub_(TiedSquares(grad));
        _pp.AllReduceSum(sq);
        norm = sq.clamp_min_(0).sqrt_();
        _step.Optimizer.Step(grad, lr, TrainStep.ClipScale(norm, _o.GradClip));
        _step.DataParallel.GatherParameters();

        // The loss lives on the last stage: mean over its replicas, then to every stage (others add zeros).
        if (_dp.WorldSize > 1) _dp.AllReduceSum(lossSum);
        _pp.AllReduceSum(lossSum);
        var logged = cat([lossSum.to(ScalarType.Float64), norm]).cpu().data<double>().ToArray();
        clock?.Mark(StepPhase.Optimizer);
        return new StepResult(logged[0] / _dp.WorldSize, logged[1], 0);   // TrainStep.Run adds the step's communication, per group
    }

    /// <summary>Megatron-LM's non-interleaved 1F1B on this rank's one stage.</summary>
    void OneForwardOneBackward(MicroBatches run, Action<long[], long[]> next, int m)
    {
        var stage = _stage;
        int s = stage.Stage, p = stage.Stages;
        long[] x = new long[(long)_o.BatchSize * _o.SeqLen], y = new long[x.Length];
        var inFlight = new Queue<(Tensor? Input, Tensor Output)>();
        Tensor? RecvForward() { if (stage.IsFirst) return null; var a = Activation(); _pp.Recv(a, s - 1); return a; }
        void SendForward(Tensor? o) { if (!stage.IsLast) _pp.Send(o!, s + 1); }
        Tensor? SendForwardRecvBackward(Tensor? o) { if (stage.IsLast) return null; var g = Activation(); _pp.SendRecv(o, s + 1, g, s + 1); return g; }
        Tensor? SendBackwardRecvForward(Tensor? g) { if (stage.IsFirst) return null; var a = Activation(); _pp.SendRecv(g, s - 1, a, s - 1); return a; }
        Tensor? RecvBackward() { if (stage.IsLast) return null; var g = Activation(); _pp.Recv(g, s + 1); return g; }
        void SendBackward(Tensor? g) { if (!stage.IsFirst) _pp.Send(g!, s - 1); }

        Tensor? Forward(Tensor? received)
        {
            next(x, y);
            run.Clock?.Mark(StepPhase.Data);
            var (input, output, send) = run.Forward(stage, received, x, y);
            inFlight.Enqueue((input, output));
            return send;
        }
        Tensor? Backward(Tensor? gradient) => run.Backward(stage, inFlight.Dequeue(), gradient);

        int warmup = WarmupForwards(s, p, m), steady = m - warmup;
        for (int i = 0; i < warmup; i++) SendForward(Forward(RecvForward()));
        Tensor? received = steady > 0 ? RecvForward() : null;
        for (int i = 0; i < steady; i++)
        {
            var gradient = SendForwardRecvBackward(Forward(received));
            var inputGradient = Backward(gradient);
            if (i == steady - 1) { SendBackward(inputGradient); received = null; }
            else received = SendBackwardRecvForward(inputGradient);
        }
        for (int i = 0; i < warmup; i++) SendBackward(Backward(RecvBackward()));
    }

    /// <summary>
    /// The interleaved 1F1B over this rank's chunks (<see cref="InterleavedSchedule"/>): slot by slot, this rank's op (if
    /// any), then the activations shifted one rank forward and the gradients one rank back, each received into the
    /// (chunk, micro-batch) that consumes it.
    /// </summary>
    void Interleaved(MicroBatches run, Action<long[], long[]> next, int m)
    {
        int p = _stage.Ranks, r = _stage.Rank, nextRank = (r + 1) % p, prevRank = (r + p - 1) % p;
        if (_interleaved is not { } schedule || schedule.MicroBatches != m) _interleaved = schedule = new InterleavedSchedule(p, _chunks.Count, m);
        // Every rank reads all micro-batches in order (the loaders stay in step); chunks take them out of order.
        var xs = new long[m][];
        var ys = new long[m][];
        for (int i = 0; i < m; i++) { xs[i] = new long[(long)_o.BatchSize * _o.SeqLen]; ys[i] = new long[xs[i].Length]; next(xs[i], ys[i]); }
        run.Clock?.Mark(StepPhase.Data);
        var inFlight = new Dictionary<(int Chunk, int MicroBatch), (Tensor? Input, Tensor Output)>();
        var arrived = new Dictionary<(bool Forward, int Chunk, int MicroBatch), Tensor>();
        Tensor Take(bool forward, PipelineOp op) => arrived.Remove((forward, op.Chunk, op.MicroBatch), out var t) ? t
            : throw new InvalidOperationException($"interleaved schedule: rank {r} runs {op} before its input arrived");

        foreach (var slot in schedule.Slots)
        {
            Tensor? sendForward = null, sendBackward = null;
            if (slot[r] is { } op)
            {
                var chunk = _chunks[op.Chunk];
                if (op.Forward)
                {
                    var (input, output, send) = run.Forward(chunk, chunk.IsFirst ? null : Take(true, op), xs[op.MicroBatch], ys[op.MicroBatch]);
                    inFlight.Add((op.Chunk, op.MicroBatch), (input, output));
                    sendForward = send;
                }
                else
                {
                    inFlight.Remove((op.Chunk, op.MicroBatch), out var pass);
                    sendBackward = run.Backward(chunk, pass, chunk.IsLast ? null : Take(false, op));
                }
            }
            // What the neighbours ran in this slot tells this rank what it receives (every rank computed the same slots).
            Tensor? Receive(int from, bool forward)
            {
                if (slot[from] is not { } theirs || theirs.Forward != forward || schedule.Consumer(from, theirs) is not { } chunk) return null;
                var t = Activation();
                arrived.Add((forward, chunk, theirs.MicroBatch), t);
                return t;
            }
            _pp.SendRecv(sendForward, nextRank, Receive(prevRank, true), prevRank);
            _pp.SendRecv(sendBackward, prevRank, Receive(nextRank, false), nextRank);
        }
    }

    Tensor Activation() => empty(_stage.ActivationShape(_o.BatchSize, _o.SeqLen), dtype: _wire, device: _step.Device);

    /// <summary>One step's forwards and backwards of micro-batches through a chunk: the loss summed on the last stage, gradients accumulated.</summary>
    sealed class MicroBatches(PipelineSchedule owner, Tensor lossSum, Scalar mScalar, KvCache? context, PhaseClock? clock)
    {
        int _backwards;
        public PhaseClock? Clock => clock;

        /// <summary>
        /// The forward of ids x → targets y through <paramref name="stage"/>, from the previous stage's activation (null on
        /// the first): what backward needs, and what goes to the next stage (null on the last).
        /// </summary>
        public (Tensor? Input, Tensor Output, Tensor? Send) Forward(PipelineStage stage, Tensor? received, long[] x, long[] y)
        {
            var o = owner._o;
            var device = owner._step.Device;
            Tensor? input = received?.to(owner._step.Flat.ComputeDtype).detach().requires_grad_(true);    // a leaf: its gradient goes back
            Tensor output;
            if (stage.IsLast)
            {
                var target = owner.Local(tensor(y, [o.BatchSize, o.SeqLen], device: device), context).reshape(-1);
                var loss = stage.Loss(input!, target, context).div_(mScalar);
                lossSum.add_(loss.detach());
                output = loss;
            }
            else output = stage.Forward(input ?? owner.Local(tensor(x, [o.BatchSize, o.SeqLen], device: device), context), context);
            clock?.Mark(StepPhase.Forward);
            return (input, output, stage.IsLast ? null : output.detach().to(owner._wire));
        }

        /// <summary>The backward of one forward's output; returns the gradient of its input for the previous stage (null on the first).</summary>
        public Tensor? Backward(PipelineStage stage, (Tensor? Input, Tensor Output) pass, Tensor? gradient)
        {
            var (input, output) = pass;
            if (stage.IsLast) output.backward();
            else output.backward([gradient!.to(output.dtype)]);
            owner._step.Flat.AccumulateComputeGradients(first: _backwards++ == 0);
            clock?.Mark(StepPhase.Backward);
            return input is null ? null : input.grad!.to(owner._wire);
        }
    }

    /// <summary>
    /// Forward only, for evaluation: the mean loss of ids x → targets y ([n, T] each, flat) through every stage, on every
    /// stage (the last computes it; the others add zeros). Every stage of the pipeline calls it with the same rows.
    /// Interleaved, the activation goes round the ranks v times (a chain of sends, so no two ranks wait on each other).
    /// </summary>
    public double Loss(long[] x, long[] y, int n)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var device = _step.Device;
        long t = x.Length / n;
        int p = _stage.Ranks, r = _stage.Rank;
        var context = _stage.Parallel?.ContextOf(t, device);
        var loss = zeros(1, dtype: ScalarType.Float64, device: device);
        foreach (var chunk in _chunks)
        {
            Tensor input;
            if (chunk.IsFirst) input = Local(tensor(x, [n, t], device: device), context);
            else
            {
                var received = empty(chunk.ActivationShape(n, t), dtype: _wire, device: device);
                _pp.Recv(received, (r + p - 1) % p);
                input = received.to(_step.Flat.ComputeDtype);
            }
            if (!chunk.IsLast) _pp.Send(chunk.Forward(input, context).to(_wire), (r + 1) % p);
            else loss.add_(chunk.Loss(input, Local(tensor(y, [n, t], device: device), context).reshape(-1), context).to(ScalarType.Float64));
        }
        _pp.AllReduceSum(loss);
        if (context is not null) { _stage.Parallel!.Grid.Cp.AllReduceSum(loss); loss.div_(_stage.Parallel.Grid.Dims.Cp); }   // each CP rank's loss covers its chunks (equal counts)
        return loss.item<double>();
    }

    /// <summary>This rank's tokens of a [B, T] batch under context parallelism, else the batch.</summary>
    Tensor Local(Tensor batch, KvCache? context) => _stage.Parallel?.LocalTokens(batch, context) ?? batch;

    /// <summary>Sum of squares of the averaged gradient of the tied table within this rank's shard of the flat vector (all-reduced over a ZeRO-1/2 group and over TP).</summary>
    Tensor TiedSquares(Tensor gradShard)
    {
        var item = _step.Flat.Items.First(i => i.Name == _stage.Tied);
        var (offset, length) = _step.DataParallel.ShardRange;
        long from = Math.Max(offset, item.Offset), to = Math.Min(offset + length, item.Offset + item.Length);
        var sq = zeros(1, dtype: ScalarType.Float64, device: gradShard.device);
        if (to > from) sq.add_(GradientNorm.SumOfSquares(gradShard.narrow(0, from - offset, to - from)));
        if (_step.DataParallel.Zero >= 1) _dp.AllReduceSum(sq);
        if (_stage.Parallel is { IsTensorParallel: true } p) p.Grid.Tp.AllReduceSum(sq);   // the table is split over TP: every rank's rows count
        return sq;
    }
}
