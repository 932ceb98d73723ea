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
/// and exchanges activations with the same TP × CP rank of the neighbouring stages.
/// </summary>
public sealed class PipelineSchedule
{
    readonly PipelineStage _stage;
    readonly TrainStep _step;
    readonly TrainStepOptions _o;
    readonly ICommunicator _pp, _dp;
    readonly ScalarType _wire;          // activations on the wire: fp32 under MPI (it has no bf16 type), else the compute dtype

    public PipelineSchedule(PipelineStage stage, TrainStep step, TrainStepOptions options)
    {
        _stage = stage;
        _step = step;
        _o = options;
        _pp = stage.Pp;
        _dp = step.DataParallel.Comm;
        _wire = _pp.Backend.Contains("nccl", StringComparison.OrdinalIgnoreCase) ? step.Flat.ComputeDtype : ScalarType.Float32;
    }

    /// <summary>Warm-up forwards of this stage for <paramref name="m"/> micro-batches: min(p − s − 1, m).</summary>
    public static int WarmupForwards(int stage, int stages, int m) => Math.Min(stages - stage - 1, m);

    /// <summary>One optimizer step over <paramref name="m"/> micro-batches (every stage reads them all: the first uses the inputs, the last the targets).</summary>
    public StepResult Step(Action<long[], long[]> next, int m, double lr, PhaseClock? clock)
    {
        using var scope = NewDisposeScope();
        var flat = _step.Flat;
        var device = _step.Device;
        flat.ZeroGradients();
        var lossSum = zeros(1, device: device);
        using var mScalar = ((double)m).ToScalar();
        long[] x = new long[(long)_o.BatchSize * _o.SeqLen], y = new long[x.Length];
        int s = _stage.Stage, p = _stage.Stages;
        var inFlight = new Queue<(Tensor? Input, Tensor Output)>();
        var context = _stage.Parallel?.ContextOf(_o.SeqLen, device);     // context parallelism: this rank's chunks of every sequence
        int backwards = 0;

        Tensor Activation() => empty(_stage.ActivationShape(_o.BatchSize, _o.SeqLen), dtype: _wire, device: device);
        Tensor? RecvForward() { if (_stage.IsFirst) return null; var a = Activation(); _pp.Recv(a, s - 1); return a; }
        void SendForward(Tensor? o) { if (!_stage.IsLast) _pp.Send(o!, s + 1); }
        Tensor? SendForwardRecvBackward(Tensor? o) { if (_stage.IsLast) return null; var g = Activation(); _pp.SendRecv(o, s + 1, g, s + 1); return g; }
        Tensor? SendBackwardRecvForward(Tensor? g) { if (_stage.IsFirst) return null; var a = Activation(); _pp.SendRecv(g, s - 1, a, s - 1); return a; }
        Tensor? RecvBackward() { if (_stage.IsLast) return null; var g = Activation(); _pp.Recv(g, s + 1); return g; }
        void SendBackward(Tensor? g) { if (!_stage.IsFirst) _pp.Send(g!, s - 1); }

        // Forward of the next micro-batch; returns what goes to the next stage (null on the last).
        Tensor? Forward(Tensor? received)
        {
            next(x, y);
            clock?.Mark(StepPhase.Data);
            Tensor? input = received?.to(flat.ComputeDtype).detach().requires_grad_(true);    // a leaf: its gradient goes back
            Tensor output;
            if (_stage.IsLast)
            {
                var target = Local(tensor(y, [_o.BatchSize, _o.SeqLen], device: device), context).reshape(-1);
                var loss = _stage.Loss(input!, target, context).div_(mScalar);
                lossSum.add_(loss.detach());
                output = loss;
            }
            else output = _stage.Forward(input ?? Local(tensor(x, [_o.BatchSize, _o.SeqLen], device: device), context), context);
            inFlight.Enqueue((input, output));
            clock?.Mark(StepPhase.Forward);
            return _stage.IsLast ? null : output.detach().to(_wire);
        }

        // Backward of the oldest micro-batch in flight; returns the gradient of its input for the previous stage (null on the first).
        Tensor? Backward(Tensor? gradient)
        {
            var (input, output) = inFlight.Dequeue();
            if (_stage.IsLast) output.backward();
            else output.backward([gradient!.to(output.dtype)]);
            flat.AccumulateComputeGradients(first: backwards++ == 0);
            clock?.Mark(StepPhase.Backward);
            return input is null ? null : input.grad!.to(_wire);
        }

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

        // The tied table: both ends add the other's gradient (a + b = b + a exactly, so both copies stay identical); under
        // TP each TP rank's pipeline group exchanges its own rows of the table.
        flat.EnsureGradientViews();
        _stage.Parallel?.ReduceSequenceParallelGradients(flat);
        if (_stage.HoldsTied)
        {
            var item = flat.Items.First(i => i.Name == _stage.Tied);
            var mine = flat.Gradients.narrow(0, item.Offset, item.Length);
            var theirs = empty_like(mine);
            _pp.SendRecv(mine, _stage.IsFirst ? p - 1 : 0, theirs, _stage.IsFirst ? p - 1 : 0);
            mine.add_(theirs);
        }

        var (grad, norm) = _step.DataParallel.ReduceGradients();
        // Sum of squares over stages (each already summed over its TP group), the tied table counted on the first stage only.
        var sq = norm.mul(norm);
        if (_stage.HoldsTied && _stage.IsLast) sq.sub_(TiedSquares(grad));
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

    /// <summary>
    /// Forward only, for evaluation: the mean loss of ids x → targets y ([n, T] each, flat) through every stage, on every
    /// stage (the last computes it; the others add zeros). Every stage of the pipeline calls it with the same rows.
    /// </summary>
    public double Loss(long[] x, long[] y, int n)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var device = _step.Device;
        long t = x.Length / n;
        int s = _stage.Stage;
        var context = _stage.Parallel?.ContextOf(t, device);
        Tensor input;
        if (_stage.IsFirst) input = Local(tensor(x, [n, t], device: device), context);
        else
        {
            var received = empty(_stage.ActivationShape(n, t), dtype: _wire, device: device);
            _pp.Recv(received, s - 1);
            input = received.to(_step.Flat.ComputeDtype);
        }
        var loss = zeros(1, dtype: ScalarType.Float64, device: device);
        if (!_stage.IsLast) _pp.Send(_stage.Forward(input, context).to(_wire), s + 1);
        else loss.add_(_stage.Loss(input, Local(tensor(y, [n, t], device: device), context).reshape(-1), context).to(ScalarType.Float64));
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
