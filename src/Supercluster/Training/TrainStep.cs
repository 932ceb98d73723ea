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
    /// <summary>0: replicated optimizer state; 1: ZeRO-1; 2: and sharded gradients; 3: and sharded parameters (FSDP).</summary>
    public int Zero { get; init; }
    public double WeightDecay { get; init; } = 0.1;
    /// <summary>Clip the global gradient norm to this (0 = off).</summary>
    public double GradClip { get; init; } = 1.0;
    /// <summary><c>--optimizer</c>: NAME[:IMPLEMENTATION] (<see cref="Optimizers"/>).</summary>
    public string Optimizer { get; init; } = "auto";
    /// <summary>fp32, or bf16: bf16 compute weights with fp32 master weights, gradients and optimizer state.</summary>
    public ScalarType ComputeDtype { get; init; } = ScalarType.Float32;
    /// <summary>MoE: weights of the Switch load-balancing loss and the ST-MoE router z-loss in the objective.</summary>
    public double AuxLossCoef { get; init; } = 0.01;
    public double ZLossCoef { get; init; } = 0.001;
}

/// <summary>What one step did: mean loss over micro-batches and ranks, gradient norm before clipping, communication time.</summary>
public readonly record struct StepResult(double Loss, double GradNorm, double CommSeconds)
{
    /// <summary>The step's collective time per communicator group (tp, dp_cp, …; "world" for plain data parallelism).</summary>
    public IReadOnlyDictionary<string, double>? CommSecondsByGroup { get; init; }
    /// <summary>The step's bytes sent by this rank per group (<see cref="ICommunicator.TakeSentBytes"/>).</summary>
    public IReadOnlyDictionary<string, double>? CommBytesByGroup { get; init; }
    /// <summary>CPU: growth of this process's resident memory over the first micro-batch's forward (what it keeps for the backward), bytes; 0 elsewhere.</summary>
    public long ForwardResidentBytes { get; init; }
    /// <summary>The global batch had no trained target (all loss-masked): nothing was computed or updated.</summary>
    public bool Skipped { get; init; }
    /// <summary>Per MoE layer: expert load, auxiliary losses, dropped slots (null for a dense model).</summary>
    public IReadOnlyList<MoeLayerStats>? Moe { get; init; }
    /// <summary>This rank's seconds in MoE routing and dispatch (outside expert matmuls), and in the expert all-to-all.</summary>
    public double RoutingSeconds { get; init; }
    public double AllToAllSeconds { get; init; }
}

/// <summary>
/// One training step, the same for <c>train</c>, <c>bench</c> and the tests: forward and loss
/// (<see cref="NextTokenLoss"/>) and backward over the micro-batches, gradient averaging and norm
/// (<see cref="DataParallel"/>), clipping, the optimizer (<see cref="TrainingOptimizer"/>), and ZeRO-1/2's parameter
/// gather. It composes around the model: parameters become views of flat buffers (<see cref="FlatParameters"/>), and
/// under bf16 the model is converted to bf16 compute weights whose fp32 masters the optimizer keeps. ZeRO-3 instead
/// shards the parameters per unit (<see cref="FullyShard"/>), which gathers them around each unit's forward and
/// backward and reduce-scatters their gradients during backward.
/// </summary>
public sealed class TrainStep : IDisposable
{
    readonly CausalLM _model;
    readonly ICommunicator _comm, _dp;
    readonly TrainStepOptions _o;
    readonly Parallelism.ParallelModel? _parallel;
    readonly long[] _x, _y;
    readonly PipelineSchedule? _pipeline;
    readonly (int Layer, MoE Moe)[] _moe;

    /// <param name="model">fp32 parameters on the training device, weights already loaded (they become the master copy).</param>
    /// <param name="parallel">The model after <see cref="Parallelism.Parallelize.Apply"/>: its loss, its data-parallel group
    /// (gradients are averaged over DP × CP), sequence-parallel gradient sums and the model-parallel gradient norm; null: plain data parallelism over <paramref name="comm"/>.</param>
    /// <param name="stages">Pipeline parallelism: this rank's stage of the model, or its chunks when interleaved (its parameters only; the step runs 1F1B).</param>
    /// <param name="experts">MoE: the expert-parallel group and the ranks holding the same experts (null: the model is dense,
    /// or all experts are local and averaged over the data-parallel group).</param>
    public TrainStep(CausalLM model, ICommunicator comm, TrainStepOptions options, Parallelism.ParallelModel? parallel = null, IReadOnlyList<PipelineStage>? stages = null,
        (ICommunicator Ep, ICommunicator ExpertDp)? experts = null)
    {
        if (options.ComputeDtype is not (ScalarType.Float32 or ScalarType.BFloat16))
            throw new BadInputException($"--dtype {options.ComputeDtype}: expected fp32 or bf16");
        _model = model;
        _comm = comm;
        _parallel = parallel;
        _dp = parallel?.DataParallel ?? comm;
        _o = options;
        _moe = MoE.Layers(model).ToArray();
        // MoE: expert parameters train apart (their own averaging group and optimizer state), dense ones as before.
        bool IsExpert(string name) => _moe.Length > 0 && MoE.IsExpertParameter(name);
        if (_moe.Length > 0 && (options.Zero == 3 || stages is not null || parallel is { OwnsLoss: true }))
            throw new BadInputException("a mixture-of-experts model with --zero 3, --tp, --cp or --pp: experts compose with data and expert parallelism (and ZeRO-1/2) only in this build");
        if (options.Zero == 3)
        {
            if (parallel is { IsTensorParallel: true } || parallel?.Grid.Dims.Cp > 1 || stages is not null)
                throw new BadInputException("--zero 3 with --tp, --cp or --pp: fully sharded data parallelism composes with data parallelism only in this build; expected --zero 0, 1 or 2");
            Fsdp = new FullyShard(model, _dp, options.ComputeDtype);
            Optimizer = new TrainingOptimizer(Fsdp, _dp.Rank, options.Optimizer, options.WeightDecay);
        }
        else
        {
            var parameters = () => (stages?[0].NamedParameters() ?? model.named_parameters()).Where(p => !IsExpert(p.name)).Select(p => (p.name, p.parameter));
            if (_moe.Length > 0)
                Experts = new ExpertParameters(model.named_parameters().Where(p => IsExpert(p.name)).Select(p => (p.name, p.parameter)),
                    model.Config.Experts, experts?.Ep ?? new SingleProcess("ep"), experts?.ExpertDp ?? _dp, options.Optimizer, options.WeightDecay);
            _flat = new FlatParameters(parameters(), _dp.WorldSize);
            if (options.ComputeDtype != ScalarType.Float32)
            {
                model.to(options.ComputeDtype);                  // new parameter tensors; bound to the compute buffer next
                _flat.BindCompute(parameters());
                Experts?.Flat.BindCompute(model.named_parameters().Where(p => IsExpert(p.name)).Select(p => (p.name, p.parameter)));
            }
            _dataParallel = new DataParallel(_flat, _dp, options.Zero, parallel?.GradientNorm(_flat));
            Optimizer = new TrainingOptimizer(_flat, _dataParallel.ShardRange, _dp.Rank, _dp.WorldSize, options.Zero >= 1, options.Optimizer, options.WeightDecay);
        }
        _x = new long[(long)options.BatchSize * options.SeqLen];
        _y = new long[_x.Length];
        if (stages is not null) _pipeline = new PipelineSchedule(stages, this, options);
    }

    /// <summary>The pipeline schedule of this stage, or null without pipeline parallelism.</summary>
    public PipelineSchedule? Pipeline => _pipeline;
    readonly FlatParameters? _flat;
    readonly DataParallel? _dataParallel;
    /// <summary>ZeRO 0–2: the flat parameter and gradient vectors.</summary>
    public FlatParameters Flat => _flat ?? throw new InvalidOperationException("ZeRO-3 keeps no flat parameter vector (see Fsdp)");
    /// <summary>ZeRO 0–2: gradient averaging and the ZeRO-1/2 parameter gather.</summary>
    public DataParallel DataParallel => _dataParallel ?? throw new InvalidOperationException("ZeRO-3 averages gradients in FullyShard (see Fsdp)");
    /// <summary>ZeRO-3: the sharded parameters and their gather/reduce-scatter around each unit; else null.</summary>
    public FullyShard? Fsdp { get; }
    /// <summary>MoE models: the expert parameters, their averaging and optimizer (null for a dense model).</summary>
    public ExpertParameters? Experts { get; }
    public TrainingOptimizer Optimizer { get; }
    public Device Device => Fsdp?.Values.device ?? Flat.Values.device;

    /// <summary>The fp32 (master) weights by parameter name, for checkpoints. Collective under ZeRO-3 (gathers the model): every rank calls it.</summary>
    public IReadOnlyDictionary<string, Tensor> MasterWeights => Fsdp?.GatherParameters() ?? Flat.Items.Concat(Experts?.Flat.Items ?? []).ToDictionary(i => i.Name, i => i.Value);

    /// <summary>
    /// Collective under ZeRO-3: the model's parameters whole on every rank until disposed (evaluation and samples on
    /// one rank); nothing to do otherwise.
    /// </summary>
    public IDisposable? Unsharded() => Fsdp?.Unshard();

    /// <summary>
    /// Bytes this rank holds now for parameters (model tensors, master and compute copies), gradients and optimizer
    /// state: measured as the sizes of the distinct allocations behind those tensors (<see cref="ResidentMemory"/>).
    /// </summary>
    public (long Parameters, long Gradients, long Optimizer) MemoryPerRank()
    {
        var parameters = _model.parameters().Select(p => (Tensor?)p);
        if (Fsdp is { } f)
            return (ResidentMemory.Bytes([.. parameters, f.Values]), ResidentMemory.Bytes([.. _model.parameters().Select(p => p.grad), f.Gradients]),
                ResidentMemory.Bytes(Optimizer.StateTensors));
        var e = Experts?.Flat;
        return (ResidentMemory.Bytes([.. parameters, Flat.Values, Flat.ComputeValues, e?.Values, e?.ComputeValues]),
            ResidentMemory.Bytes([.. _model.parameters().Select(p => p.grad), .. DataParallel.GradientTensors, e is { HasGradients: true } ? e.Gradients : null, e?.ComputeGradients]),
            ResidentMemory.Bytes([.. Optimizer.StateTensors, .. Experts?.Optimizer.StateTensors ?? []]));
    }

    /// <summary>
    /// One optimizer step over <paramref name="accumulation"/> micro-batches, each filled by <paramref name="next"/>
    /// (inputs, targets; B·T each). One host synchronisation, at the end, reads the loss and norm.
    /// </summary>
    public StepResult Run(Action<long[], long[]> next, int accumulation, double lr, PhaseClock? clock = null)
    {
        if (_pipeline is not null)
        {
            TakeCommunication();                // collectives between steps are not this step's
            var r = _pipeline.Step(next, accumulation, lr, clock);
            var (seconds, bytes) = TakeCommunication();
            return r with { CommSeconds = seconds.Values.Sum(), CommSecondsByGroup = seconds, CommBytesByGroup = bytes };
        }
        using var accumScalar = ((double)accumulation).ToScalar();
        return Step(accumulation, lr, clock, micro =>
        {
            next(_x, _y);
            clock?.Mark(StepPhase.Data);
            return NextTokenLoss.Batch(_model, _x, _y, _o.BatchSize, _o.SeqLen, Device, _parallel is { OwnsLoss: true } p ? p.Loss : null).div_(accumScalar);
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
        if (_dp.WorldSize > 1)
        {
            using var c = tensor(new double[] { count }, device: _dp.Device);
            _dp.AllReduceSum(c);
            global = c.cpu().item<double>();
        }
        if (global == 0) return new StepResult(double.NaN, double.NaN, TakeCommunication().Seconds.Values.Sum()) { Skipped = true };
        using var scale = (_dp.WorldSize / global).ToScalar();
        return Step(accumulation, lr, clock, i =>
            NextTokenLoss.MaskedSum(_model, micro[i].X, micro[i].Y, micro[i].M, _o.BatchSize, _o.SeqLen, Device, documentEnd).mul_(scale));
    }

    /// <summary>The step's body: micro-batch losses (already scaled so their sum is this rank's share) and backward, then sync, clip, update.</summary>
    StepResult Step(int accumulation, double lr, PhaseClock? clock, Func<int, Tensor> microLoss)
    {
        using var scope = NewDisposeScope();
        var device = Device;
        TakeCommunication();                    // collectives between steps (stop flag, checkpoints, timings) are not this step's
        Experts?.Ep.TakeCommunicationSeconds();
        if (Fsdp is null) Flat.ZeroGradients(); else Fsdp.ZeroGradients();
        Experts?.Flat.ZeroGradients();
        var lossSum = zeros(1, device: device);
        var moe = _moe.Length == 0 ? null : new MoeStepAccumulator(_moe.Length, _model.Config.Experts, device);   // dense: nothing per step
        long forwardResident = 0;
        for (int micro = 0; micro < accumulation; micro++)
        {
            long before = micro == 0 && device.type == DeviceType.CPU ? ResidentMemory.ProcessBytes() : 0;
            var l = microLoss(micro);
            if (micro == 0 && device.type == DeviceType.CPU) forwardResident = ResidentMemory.ProcessBytes() - before;
            // MoE: the auxiliary losses join the objective, not the logged language-model loss.
            var objective = moe is null ? l : l + moe.Add(_moe, _o.AuxLossCoef, _o.ZLossCoef).div_(accumulation);
            clock?.Mark(StepPhase.Forward);
            objective.backward();
            _flat?.AccumulateComputeGradients(first: micro == 0);
            Experts?.Flat.AccumulateComputeGradients(first: micro == 0);
            lossSum.add_(l.detach());
            clock?.Mark(StepPhase.Backward);
        }
        if (_flat is not null) _parallel?.ReduceSequenceParallelGradients(_flat);
        var (grad, norm) = Fsdp?.ReduceGradients() ?? DataParallel.ReduceGradients();
        Tensor? expertGrad = null;
        if (Experts is not null)
        {
            (expertGrad, var expertSq) = Experts.ReduceGradients();
            norm = norm.square().add_(expertSq).sqrt_();                  // one global norm over dense and expert gradients
        }
        var clipScale = ClipScale(norm, _o.GradClip);
        Optimizer.Step(grad, lr, clipScale);
        Experts?.Optimizer.Step(expertGrad!, lr, clipScale);
        _dataParallel?.GatherParameters();          // ZeRO-3 gathers parameters unit by unit in the next forward
        var reduced = moe is null ? lossSum.to(ScalarType.Float64) : cat([lossSum.to(ScalarType.Float64), moe.Vector(accumulation)]);
        if (_dp.WorldSize > 1) _dp.AllReduceSum(reduced);          // TP ranks of a replica have the same loss already
        // The one host sync per step: loss, MoE statistics and gradient norm, read together at the step's end.
        var logged = cat([reduced, norm]).cpu().data<double>().ToArray();
        clock?.Mark(StepPhase.Optimizer);
        // After the sync, so a GPU backend's event timings are complete: the step's collectives, gradients to loss.
        double a2a = Experts?.Ep.TakeCommunicationSeconds() ?? 0;
        var (byGroup, bytes) = TakeCommunication();
        return new StepResult(logged[0] / _dp.WorldSize, logged[^1], byGroup.Values.Sum() + a2a)
        {
            CommSecondsByGroup = byGroup, CommBytesByGroup = bytes, ForwardResidentBytes = forwardResident,
            Moe = moe?.Read(logged.AsSpan(1, logged.Length - 2), _moe, _dp.WorldSize),
            RoutingSeconds = moe?.RoutingSeconds ?? 0, AllToAllSeconds = a2a,
        };
    }

    /// <summary>Seconds in collectives and bytes sent since the last call, per group (world only without a rank grid).</summary>
    (IReadOnlyDictionary<string, double> Seconds, IReadOnlyDictionary<string, double> Bytes) TakeCommunication() =>
        _parallel?.Grid is { } g ? (g.TakeCommunicationSeconds(), g.TakeSentBytes())
            : (new Dictionary<string, double> { ["world"] = _comm.TakeCommunicationSeconds() }, new Dictionary<string, double> { ["world"] = _comm.TakeSentBytes() });

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
        _flat?.Dispose();
        Fsdp?.Dispose();
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
