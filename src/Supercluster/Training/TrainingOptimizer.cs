using Supercluster.Checkpointing;
using Supercluster.Distributed;
using static TorchSharp.torch;

namespace Supercluster.Training;

/// <summary>
/// The optimizer of a training run: an <see cref="IOptimizer"/> over this rank's part of the flat fp32 parameters
/// (all of them, or the ZeRO-1 shard), its <see cref="ParameterGroups"/>, the compute weights it rewrites after each
/// update under mixed precision, and its checkpoint files (one per rank with ZeRO-1, else one; any number of files
/// is re-sharded on load, so a job saved on N ranks resumes on M).
/// </summary>
public sealed class TrainingOptimizer : IDisposable
{
    readonly FlatParameters _flat;
    readonly long _offset, _length;
    readonly int _rank, _world;
    readonly bool _sharded;

    /// <param name="shard">(offset, length) of the flat vector this rank updates.</param>
    /// <param name="sharded">ZeRO-1: every rank saves its own shard; else rank 0 saves the whole state.</param>
    public TrainingOptimizer(FlatParameters flat, (long Offset, long Length) shard, int rank, int world, bool sharded, string spec, double weightDecay)
    {
        _flat = flat;
        (_offset, _length) = shard;
        (_rank, _world, _sharded) = (rank, world, sharded);
        Groups = new ParameterGroups(flat);
        using (var decay = Groups.Mask(ParameterGroup.Decay))
            Rule = Optimizers.Create(spec, decay.narrow(0, _offset, _length), weightDecay);
    }

    public IOptimizer Rule { get; }
    public ParameterGroups Groups { get; }
    public long StepCount => Rule.StepCount;
    /// <summary>Bytes of optimizer state this rank holds (frozen parameters have none: they are not in the flat vector).</summary>
    public long StateBytes => Rule.StateBytes;
    public string Describe() => $"{Rule.Name}, {Rule.Implementation}";

    /// <summary>One update of this rank's parameters from its averaged gradient shard; then the compute weights of the shard.</summary>
    public void Step(Tensor gradShard, double lr, Tensor? gradScale)
    {
        using var _ = no_grad();
        Rule.Step(_flat.Values.narrow(0, _offset, _length), gradShard, lr, gradScale);
        _flat.WriteComputeWeights(_offset, _length);
    }

    /// <summary>Writes this rank's optimizer file into <paramref name="dir"/> (every rank calls it).</summary>
    public void Save(string dir)
    {
        if (!_sharded && _rank != 0) return;
        SafeTensors.Write(Path.Combine(dir, ModelCheckpoint.OptimizerFile(_sharded ? _rank : 0, _sharded ? _world : 1)), Rule.State,
            new Dictionary<string, string> { ["optimizer"] = Rule.Name, ["parameters"] = _flat.Count.ToString(), ["steps"] = Rule.StepCount.ToString() });
    }

    /// <summary>Reads the optimizer state written by any number of ranks and takes this rank's part (elastic N → M).</summary>
    public void Load(string dir)
    {
        var files = Directory.GetFiles(dir, ModelCheckpoint.OptimizerFilePattern).Order(StringComparer.Ordinal).ToList();
        if (files.Count == 0) throw new BadInputException($"{dir}: no {ModelCheckpoint.OptimizerFilePattern} (checkpoint from another version?)");
        int named = ModelCheckpoint.OptimizerFileCount(files[0]);
        if (files.Count != named)
            throw new BadInputException($"{dir}: {files.Count} optimizer shard files, their names say {named}");
        using var scope = NewDisposeScope();
        var parts = Rule.State.ToDictionary(s => s.Name, _ => new List<Tensor>());
        long steps = 0;
        foreach (var f in files)
        {
            var (t, meta) = SafeTensors.Read(f);
            if (meta.GetValueOrDefault("parameters") != _flat.Count.ToString())
                throw new BadInputException($"{f}: optimizer state for {meta.GetValueOrDefault("parameters")} parameters, the model has {_flat.Count}");
            if (meta.GetValueOrDefault("optimizer", "adamw") != Rule.Name)     // files before the field were AdamW's
                throw new BadInputException($"{f}: state of optimizer '{meta["optimizer"]}', this run uses '{Rule.Name}' (--optimizer)");
            foreach (var (name, list) in parts)
                list.Add(t.TryGetValue(name, out var v) ? v : throw new BadInputException($"{f}: tensor '{name}' is missing"));
            steps = long.Parse(meta["steps"]);
        }
        var device = _flat.Values.device;
        var mine = parts.ToDictionary(kv => kv.Key, kv => Resize(cat(kv.Value), _flat.PaddedCount).to(device).narrow(0, _offset, _length));
        Rule.LoadState(mine, steps);
    }

    /// <summary>Padding differs with the world size: cut or zero-extend to <paramref name="n"/>.</summary>
    static Tensor Resize(Tensor t, long n) => t.numel() >= n ? t.narrow(0, 0, n) : cat([t, zeros(n - t.numel())]);

    public void Dispose()
    {
        Rule.Dispose();
    }
}
