using Supercluster.Checkpointing;
using Supercluster.Distributed;
using Supercluster.Model;
using Supercluster.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Supercluster.Parallelism;

/// <summary>
/// The expert parameters of an MoE model, trained apart from the dense ones: their own flat vectors, gradients
/// averaged only over the ranks holding the same experts (<see cref="RankGrid.ExpertDp"/>), their own optimizer whose
/// state is sharded by expert parallelism (each EP rank holds its experts' moments) and saved by parameter name, so a
/// checkpoint written with EP P resumes with EP Q. The dense parameters (attention, router, norms, embeddings) stay in
/// <see cref="TrainStep"/>'s data-parallel path.
/// <para>
/// Gradient scale: an expert receives the tokens of all P ranks of its EP group through the all-to-all, so its local
/// gradient already sums P ranks' losses; dividing by P (and averaging over the expert-DP group) gives the mean over
/// every rank, as the dense parameters get (Megatron-LM scales expert gradients by 1/EP the same way).
/// </para>
/// </summary>
public sealed class ExpertParameters : IDisposable
{
    public const string FilePattern = "optimizer-experts-ep*-of-*.safetensors";
    public static string FileName(int epRank, int ep) => $"optimizer-experts-ep{epRank:D5}-of-{ep:D5}.safetensors";

    readonly ICommunicator _ep, _expertDp;
    readonly DataParallel _dp;
    readonly int _experts;

    public ExpertParameters(IEnumerable<(string Name, Parameter P)> parameters, int experts, ICommunicator ep, ICommunicator expertDp, string optimizer, double weightDecay)
    {
        (_ep, _expertDp, _experts) = (ep, expertDp, experts);
        Flat = new FlatParameters(parameters, expertDp.WorldSize);
        _dp = new DataParallel(Flat, expertDp, 0);
        Optimizer = new TrainingOptimizer(Flat, _dp.ShardRange, expertDp.Rank, expertDp.WorldSize, sharded: false, optimizer, weightDecay);
    }

    public FlatParameters Flat { get; }
    public TrainingOptimizer Optimizer { get; }
    public ICommunicator Ep => _ep;

    /// <summary>Averaged gradient of this rank's experts, and the squared norm of all experts' gradients (over the EP group).</summary>
    public (Tensor Grad, Tensor NormSquared) ReduceGradients()
    {
        if (_ep.WorldSize > 1)
            using (var p = ((double)_ep.WorldSize).ToScalar()) Flat.Gradients.div_(p);
        var (grad, norm) = _dp.ReduceGradients();
        var sq = norm.mul(norm);
        if (_ep.WorldSize > 1) _ep.AllReduceSum(sq);
        return (grad, sq);
    }

    /// <summary>The other EP ranks' expert weights (fp32 masters) by parameter name; collective over the EP group.</summary>
    public IReadOnlyDictionary<string, Tensor> GatherRemote()
    {
        var result = new Dictionary<string, Tensor>();
        if (_ep.WorldSize == 1) return result;
        var all = empty(Flat.PaddedCount * _ep.WorldSize, device: Flat.Values.device);
        _ep.AllGather(Flat.Values.contiguous(), all);
        int perRank = _experts / _ep.WorldSize;
        for (int r = 0; r < _ep.WorldSize; r++)
        {
            if (r == _ep.Rank) continue;
            foreach (var item in Flat.Items)
                result[MoE.WithExpert(item.Name, MoE.ExpertOf(item.Name) + (r - _ep.Rank) * perRank)] =
                    all.narrow(0, r * Flat.PaddedCount + item.Offset, item.Length).view(item.Value.shape);
        }
        return result;
    }

    /// <summary>One file per EP rank (written by the first rank of its expert-DP group): "STATE/PARAMETER" tensors.</summary>
    public void Save(string dir)
    {
        if (_expertDp.Rank != 0) return;
        var rule = Optimizer.Rule;
        var tensors = Flat.Items.SelectMany(i => rule.State.Select(s => ($"{s.Name}/{i.Name}", s.Value.narrow(0, i.Offset, i.Length)))).ToList();
        SafeTensors.Write(Path.Combine(dir, FileName(_ep.Rank, _ep.WorldSize)), tensors,
            new Dictionary<string, string> { ["optimizer"] = rule.Name, ["steps"] = rule.StepCount.ToString(), ["experts"] = _experts.ToString() });
    }

    /// <summary>Reads every EP rank's file (any EP size) and takes this rank's experts by name.</summary>
    public void Load(string dir)
    {
        var files = Directory.GetFiles(dir, FilePattern).Order(StringComparer.Ordinal).ToList();
        if (files.Count == 0) throw new BadInputException($"{dir}: no {FilePattern} (expert optimizer state; checkpoint of a dense model?)");
        using var scope = NewDisposeScope();
        var byName = new Dictionary<string, Tensor>();
        long steps = -1;
        foreach (var f in files)
        {
            var (t, meta) = SafeTensors.Read(f);
            if (meta.GetValueOrDefault("optimizer") != Optimizer.Rule.Name)
                throw new BadInputException($"{f}: state of optimizer '{meta.GetValueOrDefault("optimizer")}', this run uses '{Optimizer.Rule.Name}' (--optimizer)");
            foreach (var kv in t) byName[kv.Key] = kv.Value;
            steps = long.Parse(meta["steps"]);
        }
        var device = Flat.Values.device;
        var state = Optimizer.Rule.State.ToDictionary(s => s.Name, s =>
        {
            var full = zeros(Flat.PaddedCount, device: device);
            foreach (var i in Flat.Items)
            {
                string key = $"{s.Name}/{i.Name}";
                if (!byName.TryGetValue(key, out var v)) throw new BadInputException($"{dir}: expert optimizer tensor '{key}' is missing (written for another expert count?)");
                full.narrow(0, i.Offset, i.Length).copy_(v.reshape(-1));
            }
            return full.narrow(0, _dp.ShardRange.Offset, _dp.ShardRange.Length);
        });
        Optimizer.Rule.LoadState(state, steps);
    }

    public void Dispose()
    {
        Optimizer.Dispose();
        Flat.Dispose();
    }
}
