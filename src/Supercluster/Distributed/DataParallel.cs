using System.Diagnostics;
using Supercluster.Checkpointing;
using Supercluster.Training;
using Parameter = TorchSharp.Modules.Parameter;
using TorchSharp;
using static TorchSharp.torch;

namespace Supercluster.Distributed;

/// <summary>
/// Data parallelism composed around a model: after each backward, gradients are averaged across ranks (all-reduce
/// in buckets; or reduce-scatter with <c>zero = 1</c>), clipped by their global norm, and AdamW updates the flat
/// parameters — the whole vector, or with ZeRO-1 only this rank's shard, followed by an all-gather of parameters
/// (Rajbhandari et al. 2020). One rank is the same code with no-op collectives.
/// </summary>
public sealed class DataParallel : IDisposable
{
    const long BucketElements = 8 << 20; // 32 MB of fp32 per all-reduce call
    readonly ICommunicator _comm;
    readonly FlatParameters _flat;
    readonly Tensor _grad, _params;     // the flat gradient and parameter buffers [padded]; the model's tensors are views
    readonly AdamW _opt;                // whole vector, or this rank's shard
    readonly int _zero;

    public DataParallel(IEnumerable<(string Name, Parameter P)> parameters, ICommunicator comm, int zeroStage, double weightDecay, string optimizer = "auto")
    {
        if (zeroStage is not (0 or 1)) throw new BadInputException($"--zero {zeroStage}: supported stages are 0 and 1");
        _comm = comm;
        _zero = zeroStage;
        _flat = new FlatParameters(parameters, comm.WorldSize);
        _grad = _flat.Gradients;
        _params = _flat.Values;
        using var mask = _flat.DecayMask();
        _opt = new AdamW(Shard(mask), weightDecay: weightDecay, implementation: optimizer);
    }

    public ICommunicator Comm => _comm;
    public long OptimizerSteps => _opt.StepCount;
    public long ParameterCount => _flat.Count;
    public Device Device => _params.device;
    /// <summary>Which AdamW runs (fused kernel or torch ops) and why.</summary>
    public string OptimizerImplementation => _opt.Implementation;

    /// <summary>This rank's slice [rank·n/world, (rank+1)·n/world) of a full flat vector, or all of it without ZeRO.</summary>
    Tensor Shard(Tensor full) => _zero == 1 ? full.narrow(0, _comm.Rank * _flat.ShardLength, _flat.ShardLength) : full;

    /// <summary>
    /// Averages gradients, clips, updates. Returns the global gradient norm before clipping as a one-element fp64 tensor
    /// on the device, owned by the caller's dispose scope: nothing here waits for the GPU, the caller reads it when it logs.
    /// </summary>
    public Tensor Step(double lr, double gradClip, out double commSeconds)
    {
        var clock = Stopwatch.StartNew();
        double comm = 0;
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        _flat.EnsureGradientViews();
        Tensor grad;
        if (_zero == 1)
        {
            grad = empty(_flat.ShardLength, device: Device);
            comm += Timed(() => _comm.ReduceScatterSum(_grad, grad));
        }
        else
        {
            comm += Timed(() =>
            {
                for (long off = 0; off < _flat.PaddedCount; off += BucketElements)
                    _comm.AllReduceSum(_grad.narrow(0, off, Math.Min(BucketElements, _flat.PaddedCount - off)));
            });
            grad = _grad;
        }
        if (_comm.WorldSize > 1)
            using (var world = ((double)_comm.WorldSize).ToScalar()) grad.div_(world);

        // Global norm: each rank's shard contributes its sum of squares.
        var local = linalg.vector_norm(grad).to(ScalarType.Float64).reshape(1);    // one pass, no temporary
        var sq = local.mul_(local);
        if (_zero == 1) comm += Timed(() => _comm.AllReduceSum(sq));
        var norm = sq.sqrt();
        // Clip factor min(1, clip / (norm + 1e-6)), as torch.nn.utils.clip_grad_norm_, computed and applied on the device.
        Tensor? scale = null;
        if (gradClip > 0)
            using (var clip = gradClip.ToScalar()) using (var eps = 1e-6.ToScalar()) using (var one = 1.0.ToScalar())
                scale = norm.add(eps).reciprocal_().mul_(clip).clamp_max_(one).to(ScalarType.Float32);

        _opt.Step(Shard(_params), grad, lr, scale);
        if (_zero == 1)
        {
            using var mine = Shard(_params).clone();
            comm += Timed(() => _comm.AllGather(mine, _params));
        }
        commSeconds = comm;
        return norm.MoveToOuterDisposeScope();
    }

    static double Timed(Action a)
    {
        var c = Stopwatch.StartNew();
        a();
        return c.Elapsed.TotalSeconds;
    }

    /// <summary>Zeroes every gradient at once (they are views of one buffer).</summary>
    public void ZeroGrad() => _grad.zero_();

    /// <summary>Bytes this rank holds for parameters, gradients and optimizer state (moments + decay mask).</summary>
    public (long Parameters, long Gradients, long Optimizer) MemoryPerRank() =>
        (_flat.PaddedCount * 4, _flat.PaddedCount * 4, _opt.StateBytes);

    // ---- checkpoint files: one optimizer shard per rank (ZeRO), or one file written by rank 0 ----

    static string ShardFile(int rank, int world) => $"optimizer-rank{rank:D5}-of-{world:D5}.safetensors";

    /// <summary>Writes this rank's optimizer file into <paramref name="dir"/> (all ranks call it).</summary>
    public void SaveOptimizer(string dir)
    {
        int files = _zero == 1 ? _comm.WorldSize : 1;
        if (_zero == 0 && _comm.Rank != 0) return;
        var (m, v) = _opt.State;
        SafeTensors.Write(Path.Combine(dir, ShardFile(_zero == 1 ? _comm.Rank : 0, files)), [("exp_avg", m), ("exp_avg_sq", v)],
            new Dictionary<string, string> { ["parameters"] = _flat.Count.ToString(), ["steps"] = _opt.StepCount.ToString() });
    }

    /// <summary>Reads the optimizer state written by any number of ranks and takes this rank's part (elastic N → M).</summary>
    public void LoadOptimizer(string dir)
    {
        var files = Directory.GetFiles(dir, "optimizer-rank*-of-*.safetensors").Order(StringComparer.Ordinal).ToList();
        if (files.Count == 0) throw new BadInputException($"{dir}: no optimizer-rank*.safetensors (checkpoint from another version?)");
        string expected = Path.GetFileName(files[0])[^"00000.safetensors".Length..];
        if (files.Count != int.Parse(expected[..5]))
            throw new BadInputException($"{dir}: {files.Count} optimizer shard files, their names say {int.Parse(expected[..5])}");
        using var scope = NewDisposeScope();
        var m = new List<Tensor>();
        var v = new List<Tensor>();
        long steps = 0;
        foreach (var f in files)
        {
            var (t, meta) = SafeTensors.Read(f);
            if (meta.GetValueOrDefault("parameters") != _flat.Count.ToString())
                throw new BadInputException($"{f}: optimizer state for {meta.GetValueOrDefault("parameters")} parameters, the model has {_flat.Count}");
            m.Add(t["exp_avg"]);
            v.Add(t["exp_avg_sq"]);
            steps = long.Parse(meta["steps"]);
        }
        var fullM = Resize(cat(m), _flat.PaddedCount).to(Device);
        var fullV = Resize(cat(v), _flat.PaddedCount).to(Device);
        _opt.LoadState(Shard(fullM), Shard(fullV), steps);
    }

    /// <summary>Padding differs with the world size: cut or zero-extend to <paramref name="n"/>.</summary>
    static Tensor Resize(Tensor t, long n) => t.numel() >= n ? t.narrow(0, 0, n) : cat([t, zeros(n - t.numel())]);

    public void Dispose()
    {
        _opt.Dispose();
        _flat.Dispose();
    }
}
