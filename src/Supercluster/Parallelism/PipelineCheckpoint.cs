using Supercluster.Training;
using static TorchSharp.torch;

namespace Supercluster.Parallelism;

/// <summary>
/// Checkpoints of a pipeline-parallel run stay independent of the layout: the first stage gathers every stage's weights
/// and optimizer state by parameter name (under TP, each TP rank's pipeline group its shards, then the first stage's TP
/// group the full tensors), and world rank 0 writes them as a one-rank run would: model.safetensors with full tensors
/// under Hugging Face names, and the optimizer state by name in <see cref="LayoutFreeCheckpoint"/>'s format, which
/// loads into any layout (<see cref="LayoutFreeCheckpoint.LoadOptimizer"/> takes each stage's parameters by name).
/// </summary>
public static class PipelineCheckpoint
{
    /// <summary>The fp32 master weights of the whole model by parameter name on world rank 0, null elsewhere (every rank calls it).</summary>
    public static IReadOnlyDictionary<string, Tensor>? GatherWeights(PipelineStage stage, TrainStep step, int worldRank)
    {
        if (step.DataParallel.Comm.Rank != 0) return null;     // data-parallel replicas hold the same weights
        var byName = GatherByName(stage, step.Flat, step.Flat.Values);
        if (byName is not null && stage.Parallel is { } p)
            byName = stage.Layout.ToDictionary(l => l.Name, l => p.Full(l.Name, byName[l.Name]));   // TP shards (a collective over the first stage's TP group)
        return worldRank == 0 ? byName : null;
    }

    /// <summary>Writes the optimizer state of the whole model by name on world rank 0 (every rank calls it).</summary>
    public static void SaveOptimizer(string dir, PipelineStage stage, TrainStep step, ParallelModel p)
    {
        using var scope = NewDisposeScope();
        var tensors = new List<(string, Tensor)>();
        foreach (var (state, value) in step.Optimizer.Rule.State)
        {
            var whole = LayoutFreeCheckpoint.WholeLocal(value, step, p);        // ZeRO shards gathered over DP
            if (step.DataParallel.Comm.Rank != 0) continue;
            if (GatherByName(stage, step.Flat, whole) is not { } byName) continue;
            foreach (var (name, _) in stage.Layout) tensors.Add(($"{state}:{name}", LayoutFreeCheckpoint.FullState(p, name, byName[name])));
        }
        if (p.Grid.World.Rank == 0) LayoutFreeCheckpoint.WriteByName(dir, tensors, step, p);
    }

    /// <summary>
    /// Rank 0 of the pipeline group receives every rank's flat vector (the parameters of all its chunks, in the model's
    /// order) and returns the whole model's tensors by name (a table held by two ranks from rank 0; TP shards as this rank
    /// holds them); other ranks send theirs and get null.
    /// </summary>
    static Dictionary<string, Tensor>? GatherByName(PipelineStage stage, Distributed.FlatParameters flat, Tensor flatVector)
    {
        var mine = flatVector.narrow(0, 0, flat.Count);
        if (stage.Rank != 0) { stage.Pp.Send(mine.contiguous(), 0); return null; }
        var shapes = stage.Layout.ToDictionary(l => l.Name, l => l.Shape);
        var byName = new Dictionary<string, Tensor>();
        foreach (var item in flat.Items) byName[item.Name] = mine.narrow(0, item.Offset, item.Length).view(shapes[item.Name]);
        for (int s = 1; s < stage.Ranks; s++)
        {
            var names = PipelineStage.NamesOfRank(stage.Model, s, stage.Ranks, stage.Interleave).ToList();
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

    static long Numel(long[] shape) => shape.Aggregate(1L, (a, b) => a * b);
}
