using System.Diagnostics;
using Supercluster.Distributed;
using Supercluster.Model;
using Supercluster.Parallelism;
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
    /// <summary>MoE: weight of the Switch load-balancing loss added to the training loss.</summary>
    public double AuxLossCoef { get; init; } = 0.01;
    /// <summary>MoE: weight of the ST-MoE router z-loss.</summary>
    public double ZLossCoef { get; init; } = 0.001;
}

/// <summary>What one step did: mean loss over micro-batches and ranks, gradient norm before clipping, communication time.</summary>
public readonly record struct StepResult(double Loss, double GradNorm, double CommSeconds)
{
    /// <summary>Per MoE layer: expert load, auxiliary losses, dropped slots (null for a dense model).</summary>
    public IReadOnlyList<MoeLayerStats>? Moe { get; init; }
    /// <summary>This rank's seconds in MoE routing and dispatch (outside expert matmuls), and in the expert all-to-all.</summary>
    public double RoutingSeconds { get; init; }
    public double AllToAllSeconds { get; init; }
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
    readonly (int Layer, MoE Moe)[] _moe;

    /// <param name="model">fp32 parameters on the training device, weights already loaded (they become the master copy).</param>
    /// <param name="experts">MoE: the expert-parallel group and the ranks holding the same experts (null: the model is dense,
    /// or all experts are local and averaged over <paramref name="comm"/>).</param>
    public TrainStep(CausalLM model, ICommunicator comm, TrainStepOptions options, (ICommunicator Ep, ICommunicator ExpertDp)? experts = null)
    {
        if (options.ComputeDtype is not (ScalarType.Float32 or ScalarType.BFloat16))
            throw new BadInputException($"--dtype {options.ComputeDtype}: expected fp32 or bf16");
        _model = model;
        _comm = comm;
        _o = options;
        _moe = MoE.Layers(model).ToArray();
        // MoE: expert parameters train apart (their own averaging group and optimizer state), dense ones as before.
        bool IsExpert(string name) => _moe.Length > 0 && MoE.IsExpertParameter(name);
        Flat = new FlatParameters(model.named_parameters().Where(p => !IsExpert(p.name)).Select(p => (p.name, p.parameter)), comm.WorldSize);
        if (_moe.Length > 0)
            Experts = new ExpertParameters(model.named_parameters().Where(p => IsExpert(p.name)).Select(p => (p.name, p.parameter)),
                model.Config.Experts, experts?.Ep ?? new SingleProcess("ep"), experts?.ExpertDp ?? comm, options.Optimizer, options.WeightDecay);
        if (options.ComputeDtype != ScalarType.Float32)
        {
            model.to(options.ComputeDtype);                  // new parameter tensors; bound to the compute buffer next
            Flat.BindCompute(model.named_parameters().Where(p => !IsExpert(p.name)).Select(p => (p.name, p.parameter)));
            Experts?.Flat.BindCompute(model.named_parameters().Where(p => IsExpert(p.name)).Select(p => (p.name, p.parameter)));
        }
        DataParallel = new DataParallel(Flat, comm, options.Zero);
        Optimizer = new TrainingOptimizer(Flat, DataParallel.ShardRange, comm.Rank, comm.WorldSize, options.Zero == 1, options.Optimizer, options.WeightDecay);
        _x = new long[(long)options.BatchSize * options.SeqLen];
        _y = new long[_x.Length];
    }

    public FlatParameters Flat { get; }
    /// <summary>MoE models: the expert parameters, their averaging and optimizer (null for a dense model).</summary>
    public ExpertParameters? Experts { get; }
    public DataParallel DataParallel { get; }
    public TrainingOptimizer Optimizer { get; }
    public Device Device => Flat.Values.device;

    /// <summary>The fp32 (master) weights by parameter name, for checkpoints.</summary>
    public IReadOnlyDictionary<string, Tensor> MasterWeights =>
        Flat.Items.Concat(Experts?.Flat.Items ?? []).ToDictionary(i => i.Name, i => i.Value);

    /// <summary>Bytes this rank holds for parameters (master + compute), gradients and optimizer state.</summary>
    public (long Parameters, long Gradients, long Optimizer) MemoryPerRank()
    {
        long compute = Flat.ComputeValues is { } c ? c.numel() * c.ElementSize : 0;
        long expert = Experts is { } e ? e.Flat.PaddedCount * 4 + (e.Flat.ComputeValues is { } ec ? ec.numel() * ec.ElementSize : 0) : 0;
        return (Flat.PaddedCount * 4 + compute + expert, Flat.PaddedCount * 4 + compute + expert, Optimizer.StateBytes + (Experts?.Optimizer.StateBytes ?? 0));
    }

    /// <summary>
    /// One optimizer step over <paramref name="accumulation"/> micro-batches, each filled by <paramref name="next"/>
    /// (inputs, targets; B·T each). One host synchronisation, at the end, reads the loss and norm.
    /// </summary>
    public StepResult Run(Action<long[], long[]> next, int accumulation, double lr, PhaseClock? clock = null)
    {
        using var scope = NewDisposeScope();
        var device = Device;
        _comm.TakeCommunicationSeconds();       // collectives between steps (stop flag, checkpoints, timings) are not this step's
        Experts?.Ep.TakeCommunicationSeconds();
        Flat.ZeroGradients();
        Experts?.Flat.ZeroGradients();
        var lossSum = zeros(1, device: device);
        var moe = new MoeStepAccumulator(_moe.Length, _model.Config.Experts, device);
        using var accumScalar = ((double)accumulation).ToScalar();
        for (int micro = 0; micro < accumulation; micro++)
        {
            next(_x, _y);
            clock?.Mark(StepPhase.Data);
            var l = NextTokenLoss.Batch(_model, _x, _y, _o.BatchSize, _o.SeqLen, device).div_(accumScalar);
            // MoE: the auxiliary losses join the objective, not the logged language-model loss.
            var objective = _moe.Length == 0 ? l : l + moe.Add(_moe, _o.AuxLossCoef, _o.ZLossCoef).div_(accumScalar);
            clock?.Mark(StepPhase.Forward);
            objective.backward();
            Flat.AccumulateComputeGradients(first: micro == 0);
            Experts?.Flat.AccumulateComputeGradients(first: micro == 0);
            lossSum.add_(l.detach());
            clock?.Mark(StepPhase.Backward);
        }
        var (grad, norm) = DataParallel.ReduceGradients();
        Tensor? expertGrad = null;
        if (Experts is not null)
        {
            (expertGrad, var expertSq) = Experts.ReduceGradients();
            norm = norm.square().add_(expertSq).sqrt_();                  // one global norm over dense and expert gradients
        }
        var scale = ClipScale(norm, _o.GradClip);
        Optimizer.Step(grad, lr, scale);
        if (Experts is not null) Experts.Optimizer.Step(expertGrad!, lr, scale);
        DataParallel.GatherParameters();
        var reduced = _moe.Length == 0 ? lossSum.to(ScalarType.Float64) : cat([lossSum.to(ScalarType.Float64), moe.Vector(accumulation)]);
        if (_comm.WorldSize > 1) _comm.AllReduceSum(reduced);
        // The one host sync per step: loss, MoE statistics and gradient norm, read together at the step's end.
        var logged = cat([reduced, norm]).cpu().data<double>().ToArray();
        clock?.Mark(StepPhase.Optimizer);
        // After the sync, so a GPU backend's event timings are complete: the step's collectives, gradients to loss.
        double a2a = Experts?.Ep.TakeCommunicationSeconds() ?? 0;
        return new StepResult(logged[0] / _comm.WorldSize, logged[^1], _comm.TakeCommunicationSeconds() + a2a)
        {
            Moe = _moe.Length == 0 ? null : moe.Read(logged.AsSpan(1, logged.Length - 2), _moe, _comm.WorldSize),
            RoutingSeconds = moe.RoutingSeconds, AllToAllSeconds = a2a,
        };
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
        Experts?.Dispose();
        Flat.Dispose();
    }
}

/// <summary>One MoE layer over a step: fraction of routed slots per expert, mean auxiliary losses, dropped slots (all ranks).</summary>
public sealed record MoeLayerStats(int Layer, double[] Load, double LoadBalancingLoss, double ZLoss, long Dropped);

/// <summary>Sums the MoE layers' losses and counts over a step's micro-batches (device tensors and host counts; read once).</summary>
sealed class MoeStepAccumulator(int layers, int experts, Device device)
{
    readonly Tensor _aux = zeros(layers, dtype: ScalarType.Float64, device: device), _z = zeros(layers, dtype: ScalarType.Float64, device: device);
    readonly double[] _counts = new double[layers * experts + layers];   // slots per expert per layer, then dropped per layer
    public double RoutingSeconds { get; private set; }

    /// <summary>This micro-batch's auxiliary objective Σ_layers (α·aux + β·z), with its graph; records the statistics.</summary>
    public Tensor Add(IReadOnlyList<(int Layer, MoE Moe)> moe, double auxCoef, double zCoef)
    {
        Tensor? objective = null;
        for (int i = 0; i < moe.Count; i++)
        {
            var s = moe[i].Moe.Last ?? throw new InvalidOperationException("MoE layer did not run");
            _aux[i].add_(s.LoadBalancingLoss.detach().to(ScalarType.Float64));
            _z[i].add_(s.ZLoss.detach().to(ScalarType.Float64));
            for (int e = 0; e < experts; e++) _counts[i * experts + e] += s.SlotsPerExpert[e];
            _counts[layers * experts + i] += s.Dropped;
            RoutingSeconds += moe[i].Moe.RoutingSeconds;
            var term = s.LoadBalancingLoss * auxCoef + s.ZLoss * zCoef;
            objective = objective is null ? term : objective + term;
        }
        return objective!;
    }

    /// <summary>[aux per layer, z per layer (means over micro-batches), slot counts, dropped] for the step's all-reduce.</summary>
    public Tensor Vector(int accumulation) =>
        cat([_aux / accumulation, _z / accumulation, tensor(_counts, dtype: ScalarType.Float64, device: _aux.device)]);

    public IReadOnlyList<MoeLayerStats> Read(ReadOnlySpan<double> v, IReadOnlyList<(int Layer, MoE Moe)> moe, int world)
    {
        var result = new List<MoeLayerStats>();
        for (int i = 0; i < layers; i++)
        {
            var counts = v.Slice(2 * layers + i * experts, experts).ToArray();
            double total = Math.Max(1, counts.Sum());
            result.Add(new MoeLayerStats(moe[i].Layer, [.. counts.Select(c => c / total)], v[i] / world, v[layers + i] / world, (long)v[2 * layers + layers * experts + i]));
        }
        return result;
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
