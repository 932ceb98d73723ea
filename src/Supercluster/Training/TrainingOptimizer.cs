using Supercluster.Checkpointing;
using Supercluster.Distributed;
using Supercluster.Parallelism;
using static TorchSharp.torch;

namespace Supercluster.Training;

/// <summary>
/// The optimizer of a training run: an <see cref="IOptimizer"/> over this rank's part of the fp32 parameters (all of
/// them, a ZeRO-1/2 slice of the flat vector, or ZeRO-3's shard of every unit: <see cref="IParameterShard"/>), its
/// <see cref="ParameterGroups"/>, the compute weights it rewrites after each update under mixed precision, and its
/// checkpoint files. Files hold state in the model's flat (named_parameters) order, so any number of them is re-sharded
/// on load: a job saved on N ranks at any ZeRO stage resumes on M ranks at any stage.
/// </summary>
public sealed class TrainingOptimizer : IDisposable
{
    readonly IParameterShard _part;

    /// <param name="shard">(offset, length) of the flat vector this rank updates.</param>
    /// <param name="sharded">ZeRO-1/2: every rank saves its own shard; else rank 0 saves the whole state.</param>
    public TrainingOptimizer(FlatParameters flat, (long Offset, long Length) shard, int rank, int world, bool sharded, string spec, double weightDecay)
        : this(new FlatSlice(flat, shard, rank, world, sharded), spec, weightDecay) { }

    /// <summary>ZeRO-3: this rank's shard of every unit.</summary>
    public TrainingOptimizer(FullyShard fsdp, int rank, string spec, double weightDecay)
        : this(new UnitShards(fsdp, rank), spec, weightDecay) { }

    TrainingOptimizer(IParameterShard part, string spec, double weightDecay)
    {
        _part = part;
        Groups = part.Groups;
        using (var decay = Groups.Mask(ParameterGroup.Decay))
        using (var mine = part.Take(decay))
            Rule = Optimizers.Create(spec, mine, weightDecay);
    }

    public IOptimizer Rule { get; }
    public ParameterGroups Groups { get; }
    public long StepCount => Rule.StepCount;
    /// <summary>Bytes of optimizer state this rank holds (frozen parameters have none: they are not in the flat vector).</summary>
    public long StateBytes => Rule.StateBytes;
    /// <summary>The state tensors this rank holds, for <see cref="ResidentMemory"/>.</summary>
    public IEnumerable<Tensor?> StateTensors => [.. Rule.State.Select(s => s.Value)];
    public string Describe() => $"{Rule.Name}, {Rule.Implementation}";

    /// <summary>One update of this rank's parameters from its averaged gradient shard; then the compute weights of the shard.</summary>
    public void Step(Tensor gradShard, double lr, Tensor? gradScale)
    {
        using var _ = no_grad();
        Rule.Step(_part.Values, gradShard, lr, gradScale);
        _part.WriteComputeWeights();
    }

    /// <summary>Writes this rank's optimizer file into <paramref name="dir"/> (every rank calls it: ZeRO-3 gathers).</summary>
    public void Save(string dir)
    {
        using var scope = NewDisposeScope();
        var parts = Rule.State.Select(s => (s.Name, Part: _part.SavePart(s.Value))).ToList();
        if (parts.Count == 0 || parts[0].Part is not { } first) return;
        SafeTensors.Write(Path.Combine(dir, ModelCheckpoint.OptimizerFile(first.File, first.Files)), parts.Select(p => (p.Name, p.Part!.Value.Part)).ToList(),
            new Dictionary<string, string> { ["optimizer"] = Rule.Name, ["parameters"] = _part.Count.ToString(), ["steps"] = Rule.StepCount.ToString() });
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
            if (meta.GetValueOrDefault("parameters") != _part.Count.ToString())
                throw new BadInputException($"{f}: optimizer state for {meta.GetValueOrDefault("parameters")} parameters, the model has {_part.Count}");
            if (meta.GetValueOrDefault("optimizer", "adamw") != Rule.Name)     // files before the field were AdamW's
                throw new BadInputException($"{f}: state of optimizer '{meta["optimizer"]}', this run uses '{Rule.Name}' (--optimizer)");
            foreach (var (name, list) in parts)
                list.Add(t.TryGetValue(name, out var v) ? v : throw new BadInputException($"{f}: tensor '{name}' is missing"));
            steps = long.Parse(meta["steps"]);
        }
        var device = _part.Values.device;
        var mine = parts.ToDictionary(kv => kv.Key, kv => _part.Take(cat(kv.Value).to(device)));
        Rule.LoadState(mine, steps);
    }

    public void Dispose()
    {
        Rule.Dispose();
    }

    /// <summary>
    /// Where this rank's optimizer finds its parameters, and how its state maps to the model's flat order (the order
    /// of checkpoint files, whatever the layout).
    /// </summary>
    interface IParameterShard
    {
        /// <summary>The model's parameter count.</summary>
        long Count { get; }
        /// <summary>fp32, this rank's part: updated in place.</summary>
        Tensor Values { get; }
        ParameterGroups Groups { get; }
        /// <summary>This rank's part of a vector in the model's flat order (at least <see cref="Count"/> long; padding beyond is cut or zero-extended).</summary>
        Tensor Take(Tensor global);
        void WriteComputeWeights();
        /// <summary>Collective: the (file index, file count, contents in flat order) this rank writes for a state tensor, or null.</summary>
        (int File, int Files, Tensor Part)? SavePart(Tensor state);
    }

    /// <summary>The flat vector (no ZeRO), or a contiguous ZeRO-1/2 slice of it: rank r's file is the r-th slice, so the files concatenate to flat order.</summary>
    sealed class FlatSlice(FlatParameters flat, (long Offset, long Length) shard, int rank, int world, bool sharded) : IParameterShard
    {
        public long Count => flat.Count;
        public Tensor Values { get; } = flat.Values.narrow(0, shard.Offset, shard.Length);
        public ParameterGroups Groups { get; } = new(flat);
        public Tensor Take(Tensor global) => Resize(global, flat.PaddedCount).narrow(0, shard.Offset, shard.Length);
        public void WriteComputeWeights() => flat.WriteComputeWeights(shard.Offset, shard.Length);
        public (int File, int Files, Tensor Part)? SavePart(Tensor state) => sharded ? (rank, world, state) : rank == 0 ? (0, 1, state) : null;

        /// <summary>Padding differs with the world size: cut or zero-extend to <paramref name="n"/>.</summary>
        static Tensor Resize(Tensor t, long n) => t.numel() >= n ? t.narrow(0, 0, n) : cat([t, zeros(n - t.numel(), device: t.device)]);
    }

    /// <summary>ZeRO-3: this rank's shard of every unit; state is gathered unit by unit into one file in flat order, which rank 0 writes.</summary>
    sealed class UnitShards(FullyShard fsdp, int rank) : IParameterShard
    {
        public long Count => fsdp.Count;
        public Tensor Values => fsdp.Values;
        public ParameterGroups Groups { get; } = new(fsdp.Items, fsdp.Count, fsdp.Values.device);
        public Tensor Take(Tensor global) => fsdp.Take(global);
        public void WriteComputeWeights() { }   // compute weights are cast from the gathered fp32 shards at each use
        public (int File, int Files, Tensor Part)? SavePart(Tensor state)
        {
            var all = fsdp.GatherFlat(state);
            return rank == 0 ? (0, 1, all) : null;
        }
    }
}
