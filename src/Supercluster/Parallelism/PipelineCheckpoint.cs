using Supercluster.Checkpointing;
using Supercluster.Training;
using static TorchSharp.torch;

namespace Supercluster.Parallelism;

/// <summary>
/// Checkpoints of a pipeline-parallel run stay independent of the layout: stage 0 gathers every stage's weights and
/// optimizer state by parameter name, and world rank 0 writes them as a one-rank run would (model.safetensors with full
/// tensors under Hugging Face names; one optimizer file in the whole model's parameter order). On load each stage takes
/// its parameters' ranges by name from files written by any layout (one rank, data parallel, ZeRO-1, other stage counts).
/// </summary>
public static class PipelineCheckpoint
{
    /// <summary>The fp32 master weights of the whole model by parameter name on world rank 0, null elsewhere (every rank calls it).</summary>
    public static IReadOnlyDictionary<string, Tensor>? GatherWeights(PipelineStage stage, TrainStep step, int worldRank)
    {
        if (step.DataParallel.Comm.Rank != 0) return null;     // data-parallel replicas hold the same weights
        var byName = GatherByName(stage, step.Flat, step.Flat.Values);
        return worldRank == 0 ? byName : null;
    }

    /// <summary>Writes the optimizer state of the whole model as one file on world rank 0 (every rank calls it).</summary>
    public static void SaveOptimizer(string dir, PipelineStage stage, TrainStep step, int worldRank)
    {
        var dp = step.DataParallel;
        var rule = step.Optimizer.Rule;
        var states = new List<(string Name, Tensor Full)>();
        foreach (var (name, value) in rule.State)
        {
            var full = value;
            if (dp.Zero == 1) { full = empty(step.Flat.PaddedCount, dtype: value.dtype, device: value.device); dp.Comm.AllGather(value.contiguous(), full); }
            states.Add((name, full));
        }
        if (dp.Comm.Rank != 0) return;
        var tensors = new List<(string, Tensor)>();
        foreach (var (name, full) in states)
        {
            var byName = GatherByName(stage, step.Flat, full);
            if (byName is not null) tensors.Add((name, cat(stage.Layout.Select(l => byName[l.Name].reshape(-1).cpu()).ToList())));
        }
        if (worldRank != 0) return;
        SafeTensors.Write(Path.Combine(dir, ModelCheckpoint.OptimizerFile(0, 1)), tensors, new Dictionary<string, string>
        {
            ["optimizer"] = rule.Name, ["parameters"] = FullCount(stage).ToString(), ["steps"] = rule.StepCount.ToString(),
        });
    }

    /// <summary>Reads optimizer state written by any layout and takes this stage's parameters (this rank's ZeRO-1 shard of them).</summary>
    public static void LoadOptimizer(string dir, PipelineStage stage, TrainStep step)
    {
        var files = Directory.GetFiles(dir, ModelCheckpoint.OptimizerFilePattern).Order(StringComparer.Ordinal).ToList();
        if (files.Count == 0) throw new BadInputException($"{dir}: no {ModelCheckpoint.OptimizerFilePattern} (checkpoint from another version?)");
        int named = ModelCheckpoint.OptimizerFileCount(files[0]);
        if (files.Count != named) throw new BadInputException($"{dir}: {files.Count} optimizer shard files, their names say {named}");
        using var scope = NewDisposeScope();
        var rule = step.Optimizer.Rule;
        long fullCount = FullCount(stage);
        var parts = rule.State.ToDictionary(s => s.Name, _ => new List<Tensor>());
        long steps = 0;
        foreach (var f in files)
        {
            var (t, meta) = SafeTensors.Read(f);
            if (meta.GetValueOrDefault("parameters") != fullCount.ToString())
                throw new BadInputException($"{f}: optimizer state for {meta.GetValueOrDefault("parameters")} parameters, the model has {fullCount}");
            if (meta.GetValueOrDefault("optimizer", "adamw") != rule.Name)
                throw new BadInputException($"{f}: state of optimizer '{meta["optimizer"]}', this run uses '{rule.Name}' (--optimizer)");
            foreach (var (name, list) in parts)
                list.Add(t.TryGetValue(name, out var v) ? v : throw new BadInputException($"{f}: tensor '{name}' is missing"));
            steps = long.Parse(meta["steps"]);
        }
        // Where each parameter starts in the whole model's flat order (the files' order, padding at the end).
        var canonical = new Dictionary<string, long>();
        long at = 0;
        foreach (var (name, shape) in stage.Layout) { canonical[name] = at; at += Numel(shape); }
        var (offset, length) = step.DataParallel.ShardRange;
        var device = step.Flat.Values.device;
        var mine = parts.ToDictionary(kv => kv.Key, kv =>
        {
            var whole = cat(kv.Value);
            var local = zeros(step.Flat.PaddedCount, dtype: whole.dtype);
            foreach (var item in step.Flat.Items)
                local.narrow(0, item.Offset, item.Length).copy_(whole.narrow(0, canonical[item.Name], item.Length));
            return local.to(device).narrow(0, offset, length);
        });
        rule.LoadState(mine, steps);
    }

    /// <summary>
    /// Stage 0 of the pipeline group receives every stage's flat vector (its own parameters in its order) and returns the
    /// whole model's tensors by name (a table held by two stages from stage 0); other stages send theirs and get null.
    /// </summary>
    static Dictionary<string, Tensor>? GatherByName(PipelineStage stage, Distributed.FlatParameters flat, Tensor flatVector)
    {
        var mine = flatVector.narrow(0, 0, flat.Count);
        if (!stage.IsFirst) { stage.Pp.Send(mine.contiguous(), 0); return null; }
        var shapes = stage.Layout.ToDictionary(l => l.Name, l => l.Shape);
        var byName = new Dictionary<string, Tensor>();
        foreach (var item in flat.Items) byName[item.Name] = mine.narrow(0, item.Offset, item.Length).view(shapes[item.Name]);
        for (int s = 1; s < stage.Stages; s++)
        {
            var names = PipelineStage.NamesOf(stage.Model, s, stage.Stages).ToList();
            var buffer = empty(names.Sum(n => Numel(shapes[n])), dtype: flatVector.dtype, device: flatVector.device);
            stage.Pp.Recv(buffer, s);
            long at = 0;
            foreach (var n in names)
            {
                long count = Numel(shapes[n]);
                byName.TryAdd(n, buffer.narrow(0, at, count).view(shapes[n]));
                at += count;
            }
        }
        return byName;
    }

    static long FullCount(PipelineStage stage) => stage.Layout.Sum(l => Numel(l.Shape));
    static long Numel(long[] shape) => shape.Aggregate(1L, (a, b) => a * b);
}
