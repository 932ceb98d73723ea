namespace Supercluster.Planning;

/// <summary>Outcome of a layout search. <see cref="Best"/> is null when nothing fits; <see cref="Reason"/> then says why.</summary>
public sealed record SearchResult(PlanResult? Best, IReadOnlyList<PlanResult> Top, int Legal, int Fitting, PlanResult? SmallestFootprint, string? Reason);

/// <summary>
/// Enumerates legal layouts for the cluster and ranks those that fit in memory by predicted wall-clock time (step time ÷ goodput); ties go to the lower ZeRO stage, then the smaller footprint.
/// TP ranges over powers of two within a node (Narayanan et al. 2021: keep tensor parallelism on NVLink); PP over divisors of the
/// layer count (× interleaving 1, 2, 4); CP over 1..16; EP over divisors of the expert count; micro-batch 1, 2, 4; ZeRO 0–3;
/// recomputation none/selective/full. DP is the largest size that fits in the remaining GPUs and divides the global batch,
/// so some GPUs may stay idle (reported as GPUs used vs available).
/// </summary>
public static class LayoutSearch
{
    public static SearchResult Search(PlanInputs template, int keep = 5)
    {
        var (m, run, c) = (template.Model, template.Run, template.Cluster);
        m.Validate(); run.Validate(); c.Validate(); template.Operations.Validate();
        var candidates = new List<PlanResult>();
        PlanResult? smallest = null;
        int legal = 0;
        foreach (var layout in Enumerate(m, run, c))
        {
            PlanResult r;
            try { r = Planner.Plan(template with { Layout = layout }); }
            catch (BadInputException) { continue; }
            legal++;
            if (smallest is null || r.Memory.TotalBytes < smallest.Memory.TotalBytes) smallest = r;
            if (r.Fits && double.IsFinite(r.WallClockDays)) candidates.Add(r);
        }
        var top = candidates.OrderBy(r => r.WallClockDays).ThenBy(r => r.Parallelism.Zero).ThenBy(r => r.Memory.TotalBytes).Take(keep).ToList();
        string? reason = null;
        if (legal == 0)
            reason = $"no legal layout of {m.Name} on {c.Gpus} GPUs: the global batch of {run.BatchSequences} sequences, {m.Layers} layers and {m.Heads} heads admit no TP·PP·CP·DP split";
        else if (top.Count == 0 && smallest is not null)
            reason = $"{m.Name} fits no layout on {c.Gpus} × {c.Gpu.Name}: the smallest footprint is {smallest.Memory.TotalBytes / 1e9:F1} GB per GPU " +
                     $"({smallest.Layout}: weights {smallest.Memory.WeightsBytes / 1e9:F1}, gradients {smallest.Memory.GradientsBytes / 1e9:F1}, " +
                     $"optimizer {smallest.Memory.OptimizerBytes / 1e9:F1}, activations {smallest.Memory.ActivationsBytes / 1e9:F1}, reserved {smallest.Memory.ReservedBytes / 1e9:F1} GB) " +
                     $"> {smallest.Memory.CapacityBytes / 1e9:F0} GB";
        return new SearchResult(top.FirstOrDefault(), top, legal, candidates.Count, smallest, reason);
    }

    static IEnumerable<ParallelLayout> Enumerate(ModelSpec m, TrainingRun run, ClusterSpec c)
    {
        for (int tp = 1; tp <= c.GpusPerNode; tp *= 2)
        {
            if (m.Heads % tp != 0 || (m.KvHeads % tp != 0 && tp % m.KvHeads != 0) || m.Ffn % tp != 0) continue;
            for (int pp = 1; pp <= m.Layers; pp++)
            {
                if (m.Layers % pp != 0) continue;
                foreach (int v in new[] { 1, 2, 4 })
                {
                    if ((v > 1 && pp == 1) || m.Layers % (pp * v) != 0) continue;
                    for (int cp = 1; cp <= 16; cp *= 2)
                    {
                        if (run.SeqLen % cp != 0) continue;
                        long slice = (long)tp * pp * cp;
                        if (slice > c.Gpus) continue;
                        for (int ep = 1; ep <= m.Experts; ep++)
                        {
                            if (m.Experts % ep != 0) continue;
                            foreach (int mb in new[] { 1, 2, 4 })
                            {
                                int dp = LargestDp(run.BatchSequences, mb, c.Gpus / slice, ep);
                                if (dp == 0) continue;
                                for (int zero = 0; zero <= 3; zero++)
                                    foreach (var rc in Enum.GetValues<Recompute>())
                                        yield return new ParallelLayout(tp, pp, dp, cp, ep, mb, v, zero, rc);
                            }
                        }
                    }
                }
            }
        }
    }

    /// <summary>Largest d ≤ limit with d·mb dividing the batch and ep dividing d; 0 if none.</summary>
    static int LargestDp(long batchSequences, int mb, long limit, int ep)
    {
        if (batchSequences % mb != 0) return 0;
        long perMb = batchSequences / mb;
        for (long d = Math.Min(limit, perMb); d >= 1; d--)
            if (perMb % d == 0 && d % ep == 0) return (int)d;
        return 0;
    }
}
