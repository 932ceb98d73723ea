using System.Diagnostics;
using Supercluster.Distributed;
using Supercluster.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace Supercluster.Training;

/// <summary>How one optimizer step is taken (the parts of <see cref="TrainOptions"/> the step needs).</summary>
public sealed record TrainStepOptions
{
    public required int BatchSize { get; init; }
    public required int SeqLen { get; init; }
    /// <summary>0: replicated optimizer state; 1: ZeRO-1.</summary>
    public int Zero { get; init; }
    public double WeightDecay { get; init; } = 0.1;
    /// <summary>Clip the global gradient norm to this (0 = off).</summary>
    public double GradClip { get; init; } = 1.0;
    /// <summary><c>--optimizer</c>: NAME[:IMPLEMENTATION] (<see cref="Optimizers"/>).</summary>
    public string Optimizer { get; init; } = "auto";
    /// <summary>fp32, or bf16: bf16 compute weights with fp32 master weights, gradients and optimizer state.</summary>
    public ScalarType ComputeDtype { get; init; } = ScalarType.Float32;
}

/// <summary>What one step did: mean loss over micro-batches and ranks, gradient norm before clipping, communication time.</summary>
public readonly record struct StepResult(double Loss, double GradNorm, double CommSeconds)
{
    /// <summary>The global batch had no trained target (all loss-masked): nothing was computed or updated.</summary>
    public bool Skipped { get; init; }
}

/// <summary>
/// One training step, the same for <c>train</c>, <c>bench</c> and the tests: forward and loss
/// (<see cref="NextTokenLoss"/>) and backward over the micro-batches, gradient averaging and norm
/// (<see cref="DataParallel"/>), clipping, the optimizer (<see cref="TrainingOptimizer"/>), and ZeRO-1's parameter
/// gather. It composes around the model: parameters become views of flat buffers (<see cref="FlatParameters"/>), and
/// under bf16 the model is converted to bf16 compute weights whose fp32 masters the optimizer keeps.
/// </summary>
public sealed class TrainStep : IDisposable
{
    readonly CausalLM _model;
    readonly ICommunicator _comm;
    readonly TrainStepOptions _o;
    readonly long[] _x, _y;

    /// <param name="model">fp32 parameters on the training device, weights already loaded (they become the master copy).</param>
    public TrainStep(CausalLM model, ICommunicator comm, TrainStepOptions options)
    {
        if (options.ComputeDtype is not (ScalarType.Float32 or ScalarType.BFloat16))
            throw new BadInputException($"--dtype {options.ComputeDtype}: expected fp32 or bf16");
        _model = model;
        _comm = comm;
        _o = options;
        Flat = new FlatParameters(model.named_parameters().Select(p => (p.name, p.parameter)), comm.WorldSize);
        if (options.ComputeDtype != ScalarType.Float32)
        {
            model.to(options.ComputeDtype);                  // new parameter tensors; bound to the compute buffer next
            Flat.BindCompute(model.named_parameters().Select(p => (p.name, p.parameter)));
        }
        DataParallel = new DataParallel(Flat, comm, options.Zero);
        Optimizer = new TrainingOptimizer(Flat, DataParallel.ShardRange, comm.Rank, comm.WorldSize, options.Zero == 1, options.Optimizer, options.WeightDecay);
        _x = new long[(long)options.BatchSize * options.SeqLen];
        _y = new long[_x.Length];
    }

    public FlatParameters Flat { get; }
    public DataParallel DataParallel { get; }
    public TrainingOptimizer Optimizer { get; }
    public Device Device => Flat.Values.device;

    /// <summary>The fp32 (master) weights by parameter name, for checkpoints.</summary>
    public IReadOnlyDictionary<string, Tensor> MasterWeights => Flat.Items.ToDictionary(i => i.Name, i => i.Value);

    /// <summary>Bytes this rank holds for parameters (master + compute), gradients and optimizer state.</summary>
    public (long Parameters, long Gradients, long Optimizer) MemoryPerRank()
    {
        long compute = Flat.ComputeValues is { } c ? c.numel() * c.ElementSize : 0;
        return (Flat.PaddedCount * 4 + compute, Flat.PaddedCount * 4 + compute, Optimizer.StateBytes);
    }

    /// <summary>
    /// One optimizer step over <paramref name="accumulation"/> micro-batches, each filled by <paramref name="next"/>
    /// (inputs, targets; B·T each). One host synchronisation, at the end, reads the loss and norm.
    /// </summary>
    public StepResult Run(Action<long[], long[]> next, int accumulation, double lr, PhaseClock? clock = null)
    {
        using var accumScalar = ((double)accumulation).ToScalar();
        return Step(accumulation, lr, clock, micro =>
        {
            next(_x, _y);
            clock?.Mark(StepPhase.Data);
            return NextTokenLoss.Batch(_model, _x, _y, _o.BatchSize, _o.SeqLen, Device).div_(accumScalar);
        });
    }

    /// <summary>
    /// One optimizer step on loss-masked data (chat fine-tuning): the loss is the mean over the trained targets of the
    /// whole global batch, Σ masked losses / global count of trained targets (not a mean of per-micro-batch means), so
    /// it is the same under any split into micro-batches and ranks. The count is known before the forward (masks are
    /// host data) and all-reduced; each rank's sum is scaled by world / count, as the gradient average divides by the
    /// world size. A global batch with no trained target is skipped: no forward, no update, <see cref="StepResult.Skipped"/>.
    /// </summary>
    public StepResult RunMasked(Action<long[], long[], byte[]> next, int accumulation, double lr, long? documentEnd, PhaseClock? clock = null)
    {
        var micro = new (long[] X, long[] Y, byte[] M)[accumulation];
        long count = 0;
        for (int i = 0; i < accumulation; i++)
        {
            micro[i] = (new long[_x.Length], new long[_x.Length], new byte[_x.Length]);
            next(micro[i].X, micro[i].Y, micro[i].M);
            foreach (var m in micro[i].M) count += m != 0 ? 1 : 0;
        }
        clock?.Mark(StepPhase.Data);
        double global = count;
        if (_comm.WorldSize > 1)
        {
            using var c = tensor(new double[] { count }, device: _comm.Device);
            _comm.AllReduceSum(c);
            global = c.cpu().item<double>();
        }
        if (global == 0) return new StepResult(double.NaN, double.NaN, _comm.TakeCommunicationSeconds()) { Skipped = true };
        using var scale = (_comm.WorldSize / global).ToScalar();
        return Step(accumulation, lr, clock, i =>
            NextTokenLoss.MaskedSum(_model, micro[i].X, micro[i].Y, micro[i].M, _o.BatchSize, _o.SeqLen, Device, documentEnd).mul_(scale));
    }

    /// <summary>The step's body: micro-batch losses (already scaled so their sum is this rank's share) and backward, then sync, clip, update.</summary>
    StepResult Step(int accumulation, double lr, PhaseClock? clock, Func<int, Tensor> microLoss)
    {
        using var scope = NewDisposeScope();
        var device = Device;
        _comm.TakeCommunicationSeconds();       // collectives between steps (stop flag, checkpoints, timings) are not this step's
        Flat.ZeroGradients();
        var lossSum = zeros(1, device: device);
        for (int micro = 0; micro < accumulation; micro++)
        {
            var l = microLoss(micro);
            clock?.Mark(StepPhase.Forward);
            l.backward();
            Flat.AccumulateComputeGradients(first: micro == 0);
            lossSum.add_(l.detach());
            clock?.Mark(StepPhase.Backward);
        }
        var (grad, norm) = DataParallel.ReduceGradients();
        Optimizer.Step(grad, lr, ClipScale(norm, _o.GradClip));
        DataParallel.GatherParameters();
        if (_comm.WorldSize > 1) _comm.AllReduceSum(lossSum);
        // The one host sync per step: loss and gradient norm, read together at the step's end.
        var logged = cat([lossSum.to(ScalarType.Float64), norm]).cpu().data<double>().ToArray();
        clock?.Mark(StepPhase.Optimizer);
        // After the sync, so a GPU backend's event timings are complete: the step's collectives, gradients to loss.
        return new StepResult(logged[0] / _comm.WorldSize, logged[1], _comm.TakeCommunicationSeconds());
    }

    /// <summary>
    /// min(1, clip / (norm + 1e-6)) as torch.nn.utils.clip_grad_norm_, computed on the device as a one-element fp32
    /// tensor the optimizer multiplies the gradient by; null when clipping is off.
    /// </summary>
    public static Tensor? ClipScale(Tensor norm, double gradClip)
    {
        if (gradClip <= 0) return null;
        using var clip = gradClip.ToScalar();
        using var eps = 1e-6.ToScalar();
        using var one = 1.0.ToScalar();
        return norm.add(eps).reciprocal_().mul_(clip).clamp_max_(one).to(ScalarType.Float32);
    }

    public void Dispose()
    {
        Optimizer.Dispose();
        Flat.Dispose();
    }
}

public enum StepPhase { Data, Forward, Backward, Optimizer }

/// <summary>
/// Time per phase of a step, for <c>bench</c>: each mark adds the time since the previous one to a phase. On a GPU
/// with <see cref="Synchronize"/> set, each mark first waits for the device (which idles it between phases).
/// </summary>
public sealed class PhaseClock
{
    readonly Stopwatch _clock = new();
    double _last;
    public double[] Milliseconds { get; } = new double[4];
    public bool Synchronize { get; set; }

    public void Start()
    {
        Array.Clear(Milliseconds);
        _last = 0;
        _clock.Restart();
    }

    public void Mark(StepPhase phase)
    {
        if (Synchronize) cuda.synchronize();
        double now = _clock.Elapsed.TotalMilliseconds;
        Milliseconds[(int)phase] += now - _last;
        _last = now;
    }

    public double Total => _clock.Elapsed.TotalMilliseconds;
}
