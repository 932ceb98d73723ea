using Supercluster.Checkpointing;
using Supercluster.Training;
using static TorchSharp.torch;

namespace Supercluster.Parallelism;

/// <summary>
/// Checkpoints that do not depend on the layout that wrote them. The weights are full tensors under Hugging Face names
/// (<see cref="ModelCheckpoint"/>), gathered from TP shards. Under model parallelism the optimizer state is stored the
/// same way: one tensor per state and parameter, "exp_avg:h.0.attn.c_attn.weight", full shape (vocabulary tables cut to
/// the real vocabulary), in <c>optimizer-rank00000-of-00001.safetensors</c> with metadata <c>layout = by-name</c>.
/// Loading takes each rank's part of each full tensor (TP shard, then its ZeRO range), so any layout resumes any other.
/// Plain data parallelism keeps <see cref="TrainingOptimizer"/>'s flat files (elastic over DP already); they load into
/// a model-parallel layout through the same by-name path.
/// <para>ZeRO shards are all-gathered over the data-parallel group before the by-name split (<see cref="WholeLocal"/>);
/// pipeline stages gather their parameters to the first stage and write the same file (<see cref="PipelineCheckpoint"/>).</para>
/// </summary>
public static class LayoutFreeCheckpoint
{
    const string LayoutKey = "layout", ByName = "by-name";

    /// <summary>Ranks that write the checkpoint's tensors (and so gather them): the TP group of data-parallel rank 0.</summary>
    static bool Writes(ParallelModel p) => p.Grid.DpRank == 0 && p.Grid.CpRank == 0;

    /// <summary>Full fp32 weights by parameter name on the writing ranks (a collective over their TP group); empty elsewhere.</summary>
    public static IReadOnlyDictionary<string, Tensor> FullWeights(TrainStep step, ParallelModel p)
    {
        if (!p.IsTensorParallel) return step.MasterWeights;
        if (!Writes(p)) return new Dictionary<string, Tensor>();
        return step.MasterWeights.ToDictionary(kv => kv.Key, kv => p.Full(kv.Key, kv.Value));
    }

    /// <summary>Writes the optimizer state into <paramref name="dir"/> (every rank calls it).</summary>
    public static void SaveOptimizer(string dir, TrainStep step, ParallelModel p)
    {
        if (!p.IsTensorParallel) { step.Optimizer.Save(dir); return; }
        using var scope = NewDisposeScope();
        var tensors = new List<(string, Tensor)>();
        foreach (var (state, value) in step.Optimizer.Rule.State)
        {
            var whole = WholeLocal(value, step, p);
            if (!Writes(p)) continue;
            foreach (var i in step.Flat.Items)
                tensors.Add(($"{state}:{i.Name}", FullState(p, i.Name, whole.narrow(0, i.Offset, i.Length).view(i.Value.shape))));
        }
        if (p.Grid.World.Rank == 0) WriteByName(dir, tensors, step, p);
    }

    /// <summary>One parameter's optimizer state whole from this rank's part (a collective over TP for sharded ones), vocabulary tables cut to the real vocabulary.</summary>
    internal static Tensor FullState(ParallelModel p, string name, Tensor local)
    {
        var full = p.Full(name, local);
        return p.Model.VocabTables.Contains(name) ? full.narrow(0, 0, p.Model.Config.VocabSize) : full;
    }

    /// <summary>Writes full optimizer tensors named "state:parameter" as the one by-name file (world rank 0 calls it).</summary>
    internal static void WriteByName(string dir, List<(string, Tensor)> tensors, TrainStep step, ParallelModel p)
    {
        SafeTensors.Write(Path.Combine(dir, ModelCheckpoint.OptimizerFile(0, 1)), tensors, new Dictionary<string, string>
        {
            ["optimizer"] = step.Optimizer.Rule.Name, ["parameters"] = p.FullShapes.Sum(s => s.Shape.Aggregate(1L, (a, b) => a * b)).ToString(),
            ["steps"] = step.Optimizer.StepCount.ToString(), [LayoutKey] = ByName, ["written_by"] = p.Grid.Dims.ToString(),
        });
    }

    /// <summary>This rank's state over its whole flat vector: the optimizer's own tensor, or under ZeRO the DP shards all-gathered.</summary>
    internal static Tensor WholeLocal(Tensor value, TrainStep step, ParallelModel p)
    {
        if (value.numel() == step.Flat.PaddedCount) return value;
        var whole = empty(step.Flat.PaddedCount, value.dtype, device: value.device);
        p.DataParallel.AllGather(value.contiguous(), whole);
        return whole;
    }

    /// <summary>Loads the optimizer state written by any layout into this rank's part of it.</summary>
    public static void LoadOptimizer(string dir, TrainStep step, ParallelModel p)
    {
        var files = Directory.GetFiles(dir, ModelCheckpoint.OptimizerFilePattern).Order(StringComparer.Ordinal).ToList();
        bool byName = files.Count == 1 && SafeTensors.Read(files[0]) is var (t0, m0) && Dispose(t0) && m0.GetValueOrDefault(LayoutKey) == ByName;
        if (!byName && !p.SplitsParameters) { step.Optimizer.Load(dir); return; }
        using var scope = NewDisposeScope();
        var rule = step.Optimizer.Rule;
        Dictionary<string, Tensor> full;
        long steps;
        if (byName)
        {
            var (t, meta) = SafeTensors.Read(files[0]);
            if (meta.GetValueOrDefault("optimizer") != rule.Name)
                throw new BadInputException($"{files[0]}: state of optimizer '{meta.GetValueOrDefault("optimizer")}', this run uses '{rule.Name}' (--optimizer)");
            (full, steps) = (t, long.Parse(meta["steps"]));
        }
        else (full, steps) = FromFlatFiles(dir, files, p, rule.State.Select(s => s.Name).ToList());

        var model = p.Model;
        var device = step.Flat.Values.device;
        var mine = new Dictionary<string, Tensor>();
        foreach (var (state, _) in rule.State)
        {
            var whole = zeros(step.Flat.PaddedCount, device: device);
            foreach (var i in step.Flat.Items)
            {
                if (!full.TryGetValue($"{state}:{i.Name}", out var f))
                    throw new BadInputException($"{files[0]}: tensor '{state}:{i.Name}' is missing (a checkpoint of another model?)");
                var shape = p.FullShapes.First(s => s.Name == i.Name).Shape;
                if (model.VocabTables.Contains(i.Name)) f = Rows(f, shape[0]);            // this layout's padding rows: zero
                if (!f.shape.SequenceEqual(shape))
                    throw new BadInputException($"{files[0]}: '{state}:{i.Name}' has shape [{string.Join(", ", f.shape)}], the model needs [{string.Join(", ", shape)}]");
                whole.narrow(0, i.Offset, i.Length).copy_(p.Local(i.Name, f.to(device)).reshape(-1));
            }
            var (off, len) = step.DataParallel.ShardRange;
            mine[state] = whole.narrow(0, off, len);
        }
        rule.LoadState(mine, steps);
    }

    /// <summary>
    /// A flat optimizer state written by plain data parallelism (one or many ZeRO files, each layout's full parameters
    /// end to end in the model's order) as full tensors by name; its vocabulary tables have the writer's padding.
    /// </summary>
    static (Dictionary<string, Tensor>, long) FromFlatFiles(string dir, List<string> files, ParallelModel p, List<string> states)
    {
        if (files.Count == 0) throw new BadInputException($"{dir}: no {ModelCheckpoint.OptimizerFilePattern} (checkpoint from another version?)");
        var saved = ModelCheckpoint.ReadConfig(dir);
        var parts = states.ToDictionary(s => s, _ => new List<Tensor>());
        long steps = 0;
        foreach (var f in files)
        {
            var (t, meta) = SafeTensors.Read(f);
            foreach (var (s, list) in parts) list.Add(t.TryGetValue(s, out var v) ? v : throw new BadInputException($"{f}: tensor '{s}' is missing"));
            steps = long.Parse(meta["steps"]);
        }
        var model = p.Model;
        var full = new Dictionary<string, Tensor>();
        foreach (var (s, list) in parts)
        {
            var flat = cat(list);
            long off = 0;
            foreach (var (name, shape) in p.FullShapes)
            {
                var written = model.VocabTables.Contains(name) ? [saved.PaddedVocab, .. shape[1..]] : shape;
                long n = written.Aggregate(1L, (a, b) => a * b);
                if (off + n > flat.numel()) throw new BadInputException($"{files[0]}: optimizer state has {flat.numel()} values, fewer than the model's parameters");
                full[$"{s}:{name}"] = flat.narrow(0, off, n).view(written);
                off += n;
            }
        }
        return (full, steps);
    }

    /// <summary>The first <paramref name="rows"/> rows of a table, zero-extended.</summary>
    static Tensor Rows(Tensor t, long rows) =>
        t.shape[0] >= rows ? t.narrow(0, 0, rows) : cat([t, zeros([rows - t.shape[0], .. t.shape[1..]], t.dtype, t.device)]);

    static bool Dispose(Dictionary<string, Tensor> tensors)
    {
        foreach (var t in tensors.Values) t.Dispose();
        return true;
    }
}
