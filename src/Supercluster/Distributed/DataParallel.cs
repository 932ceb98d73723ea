using TorchSharp;
using static TorchSharp.torch;

namespace Supercluster.Distributed;

/// <summary>
/// Data parallelism's communication, and nothing else: after the backward passes, gradients are averaged across ranks
/// (all-reduce in buckets; or, with ZeRO-1/2, reduce-scatter so each rank gets the averaged shard it updates) and their
/// global norm is computed; after the optimizer, ZeRO-1/2 all-gather the updated parameter shards (Rajbhandari et al.
/// 2020). ZeRO-2 also frees the full gradient buffer right after its reduce-scatter, so between steps a rank holds only
/// its 1/D gradient shard; the buffer is allocated again when the next step zeroes its gradients, before the first
/// forward (TorchSharp has no gradient hooks to reduce buckets while backward runs: accumulation over micro-batches
/// happens in the full buffer, and one reduce-scatter per step follows the last backward, as ZeRO-1's).
/// ZeRO-3 is <see cref="Parallelism.FullyShard"/>. Clipping and the update belong to the caller
/// (<see cref="Training.TrainStep"/>). One rank is the same code with no-op collectives.
/// </summary>
public sealed class DataParallel
{
    const long BucketElements = 8 << 20; // 32 MB of fp32 per all-reduce call
    readonly ICommunicator _comm;
    readonly FlatParameters _flat;
    readonly Tensor? _gradShard;          // ZeRO-2: this rank's averaged gradient shard, the only gradient memory kept between steps
    readonly Parallelism.GradientNorm? _norm;

    /// <param name="norm">How model-parallel ranks count the gradient norm (<see cref="Parallelism.ParallelModel.GradientNorm"/>); null: this rank's gradients are all of it.</param>
    public DataParallel(FlatParameters flat, ICommunicator comm, int zeroStage, Parallelism.GradientNorm? norm = null)
    {
        _norm = norm;
        if (zeroStage is not (0 or 1 or 2)) throw new ArgumentException($"ZeRO stage {zeroStage}: DataParallel runs 0, 1 and 2 (3 is FullyShard)");
        if (flat.WorldSize != comm.WorldSize) throw new ArgumentException($"flat parameters padded for {flat.WorldSize} ranks, the job has {comm.WorldSize}");
        _comm = comm;
        _flat = flat;
        Zero = zeroStage;
        if (Zero == 2)
        {
            _gradShard = zeros(flat.ShardLength, device: flat.Values.device).DetachFromDisposeScope();
            flat.ReleaseGradients();
        }
    }

    public ICommunicator Comm => _comm;
    public int Zero { get; }
    /// <summary>This rank's part of the flat vector: [rank·n/world, +n/world) with ZeRO-1/2, else all of it.</summary>
    public (long Offset, long Length) ShardRange => Zero >= 1 ? (_comm.Rank * _flat.ShardLength, _flat.ShardLength) : (0, _flat.PaddedCount);

    /// <summary>This rank's slice of a full flat vector (a view).</summary>
    public Tensor Shard(Tensor full) => Zero >= 1 ? full.narrow(0, ShardRange.Offset, ShardRange.Length) : full;

    /// <summary>Gradient tensors this rank holds now (for <see cref="Parallelism.ResidentMemory"/>).</summary>
    public IEnumerable<Tensor?> GradientTensors => [_flat.HasGradients ? _flat.Gradients : null, _flat.ComputeGradients, _gradShard];

    /// <summary>
    /// Averages the flat gradients across ranks. Returns this rank's averaged gradient shard (the whole vector without
    /// ZeRO) and the global gradient norm as a one-element fp64 device tensor, both owned by the caller's dispose scope
    /// (ZeRO-2's shard and the unsharded buffer are long-lived): nothing here waits for a GPU. The communicator times its
    /// own calls (<see cref="ICommunicator.TakeCommunicationSeconds"/>).
    /// </summary>
    public (Tensor GradShard, Tensor Norm) ReduceGradients()
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        _flat.EnsureGradientViews();
        var full = _flat.Gradients;
        Tensor grad;
        if (Zero >= 1)
        {
            grad = _gradShard ?? empty(_flat.ShardLength, device: full.device);
            _comm.ReduceScatterSum(full, grad);
            if (Zero == 2) _flat.ReleaseGradients();   // the full buffer's job is done until the next step's backward
        }
        else
        {
            for (long off = 0; off < _flat.PaddedCount; off += BucketElements)
                _comm.AllReduceSum(full.narrow(0, off, Math.Min(BucketElements, _flat.PaddedCount - off)));
            grad = full;
        }
        if (_comm.WorldSize > 1)
            using (var world = ((double)_comm.WorldSize).ToScalar()) grad.div_(world);

        // Global norm: each rank's shard contributes its sum of squares.
        Tensor sq;
        if (_norm is null) sq = Parallelism.GradientNorm.SumOfSquares(grad);
        else sq = _norm.LocalSquares(grad, ShardRange.Offset);
        if (Zero >= 1) _comm.AllReduceSum(sq);
        _norm?.Reduce(sq);                                                             // over TP (and other model-parallel groups)
        var norm = sq.sqrt();
        // The full buffer and ZeRO-2's shard are long-lived (not in any scope); only ZeRO-1's reduce-scatter output belongs to the caller.
        return (Zero == 1 ? grad.MoveToOuterDisposeScope() : grad, norm.MoveToOuterDisposeScope());
    }

    /// <summary>
    /// ZeRO-1/2, after the update: every rank's fp32 parameter shard to every rank, then the compute weights (bf16) of the
    /// other ranks' shards rewritten from them (a local cast: gathering the bf16 copy instead would need bf16 support in
    /// every backend, and the fp32 master must be whole on rank 0 for checkpoints anyway). Otherwise nothing.
    /// </summary>
    public void GatherParameters()
    {
        if (Zero == 0) return;
        using var scope = NewDisposeScope();
        using var mine = Shard(_flat.Values).clone();
        _comm.AllGather(mine, _flat.Values);
        _flat.WriteComputeWeights(0, _flat.PaddedCount);
    }
}
