using System.Text.RegularExpressions;
using Supercluster.Distributed;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace Supercluster.Model;

// Mixture of experts (Shazeer et al. 2017; GShard, Lepikhin et al. 2020; Switch, Fedus et al. 2022; Mixtral, Jiang et
// al. 2024; Grok-1): the MLP slot of a block becomes E expert MLPs and a router that sends each token to K of them.
// Names follow Hugging Face's Mixtral: block_sparse_moe.gate (the router), block_sparse_moe.experts.E.w1/w2/w3
// (gate, down, up projections). GPT-2 experts use the same slot with w1 (up, d→f) and w2 (down, f→d), with biases,
// stored as nn.Linear [out, in] (not transposed like GPT-2's Conv1D: there is no HF original to match).

/// <summary>A SwiGLU expert (Llama family, Mixtral's names): w2(silu(w1(x)) · w3(x)).</summary>
public sealed class SwiGluExpert : Module<Tensor, Tensor>
{
    public readonly Linear w1, w2, w3;

    public SwiGluExpert(ModelConfig c) : base(nameof(SwiGluExpert))
    {
        w1 = Linear(c.NEmbd, c.FfnHidden, hasBias: false);
        w2 = Linear(c.FfnHidden, c.NEmbd, hasBias: false);
        w3 = Linear(c.NEmbd, c.FfnHidden, hasBias: false);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => w2.forward(functional.silu(w1.forward(x)) * w3.forward(x));
}

/// <summary>A GELU expert (GPT-2 family): w2(gelu(w1(x))), with biases as GPT-2's MLP.</summary>
public sealed class GeluExpert : Module<Tensor, Tensor>
{
    public readonly Linear w1, w2;

    public GeluExpert(ModelConfig c) : base(nameof(GeluExpert))
    {
        w1 = Linear(c.NEmbd, c.FfnHidden);
        w2 = Linear(c.FfnHidden, c.NEmbd);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => w2.forward(functional.gelu(w1.forward(x), TorchSharp.Modules.GELU.Approximate.tanh));
}

/// <summary>A block's local experts registered under their global index (experts.5.w1.weight on every layout).</summary>
public sealed class ExpertList : Module
{
    public ExpertList(IEnumerable<(int Index, Module<Tensor, Tensor> Expert)> experts) : base(nameof(ExpertList))
    {
        foreach (var (index, expert) in experts) register_module(index.ToString(), expert);
    }
}

/// <summary>Which experts this rank holds: rank <see cref="Rank"/> of <see cref="Size"/> expert-parallel ranks holds a contiguous E/Size.</summary>
public readonly record struct ExpertShard(int Rank, int Size)
{
    public static readonly ExpertShard All = new(0, 1);
    public int First(int experts) => Rank * (experts / Size);
    public int Count(int experts) => experts / Size;
}

/// <summary>The router's decision for N tokens: fp32 probabilities over all experts, the top-K experts and their renormalised gates.</summary>
public sealed record Routing(Tensor Logits, Tensor Probs, Tensor Experts, Tensor Gates)
{
    /// <summary>
    /// softmax(logits) in fp32 → top-K → gates renormalised over the K chosen (Mixtral, Grok-1).
    /// logits [N, E] → Probs [N, E], Experts [N, K] (int64), Gates [N, K] (rows sum to 1).
    /// </summary>
    public static Routing TopK(Tensor logits, int k)
    {
        logits = logits.to(ScalarType.Float32);
        var probs = functional.softmax(logits, -1);                                   // [N, E]
        var (top, idx) = probs.topk(k, dim: -1);                                     // [N, K] each, largest first
        return new Routing(logits, probs, idx, top / top.sum(-1, keepdim: true));
    }

    /// <summary>
    /// Switch Transformer load balancing (Fedus et al. 2022, eq. 4, for top-K): E · Σᵢ fᵢ · Pᵢ, fᵢ the fraction of the N·K
    /// routed slots that chose expert i, Pᵢ the mean router probability of i. 1 when perfectly balanced; gradients flow through Pᵢ.
    /// </summary>
    public Tensor LoadBalancingLoss()
    {
        long e = Probs.shape[1];
        var f = SlotCounts().to(ScalarType.Float32) / Experts.numel();                      // [E]
        return (f * Probs.mean([0L])).sum() * e;
    }

    /// <summary>ST-MoE router z-loss (Zoph et al. 2022, eq. 5): mean over tokens of logsumexp(logits)².</summary>
    public Tensor ZLoss() => logsumexp(Logits, -1).square().mean();

    /// <summary>Routed slots per expert [E] (int64): tokens × K in all.</summary>
    public Tensor SlotCounts() => bincount(Experts.reshape(-1), minlength: Probs.shape[1]);
}

/// <summary>What one MoE forward did (for the aux losses and the metrics): the losses keep their graph.</summary>
public sealed record MoeForwardStats(Tensor LoadBalancingLoss, Tensor ZLoss, long[] SlotsPerExpert, long Dropped);

/// <summary>
/// Sparse MoE block: router linear → softmax (fp32) → top-K → dropless dispatch (slots sorted by expert, one matmul
/// per expert on its tokens, scattered back weighted by the gates). With a capacity factor C each expert takes at most
/// ⌈C·N·K/E⌉ slots (earliest tokens first) and the rest are dropped (their residual passes the block unchanged).
/// Under expert parallelism (<see cref="ExpertGroup"/>) this rank holds E/P experts; slots travel to their expert's
/// rank and back by all-to-all (<see cref="Parallelism.ExpertAllToAll"/>).
/// </summary>
public sealed class MoE : Module<Tensor, Tensor>
{
    readonly int _experts, _k, _first;
    readonly (int Index, Module<Tensor, Tensor> Expert)[] _local;                     // the same modules as experts, by global index
    public readonly Linear gate;                                                       // router [E, d]
    public readonly ExpertList experts;                                                // named by global expert index

    public MoE(ModelConfig c, ExpertShard shard) : base(nameof(MoE))
    {
        if (c.Experts % shard.Size != 0) throw new BadInputException($"--ep {shard.Size} does not divide --experts {c.Experts}: expected a divisor of the expert count");
        _experts = c.Experts;
        _k = c.ActiveExperts;
        _first = shard.First(c.Experts);
        gate = Linear(c.NEmbd, c.Experts, hasBias: false);
        _local = Enumerable.Range(_first, shard.Count(c.Experts))
            .Select(e => (e, c.Family == ModelFamily.Llama ? (Module<Tensor, Tensor>)new SwiGluExpert(c) : new GeluExpert(c))).ToArray();
        experts = new ExpertList(_local);
        RegisterComponents();
    }

    /// <summary>0: dropless (default); C &gt; 0: each expert takes at most ⌈C·N·K/E⌉ slots per forward.</summary>
    public double CapacityFactor { get; set; }
    /// <summary>Expert-parallel group (null or one rank: all experts local).</summary>
    public ICommunicator? ExpertGroup { get; set; }
    /// <summary>The last forward's losses and counts (in its dispose scope).</summary>
    public MoeForwardStats? Last { get; private set; }
    /// <summary>Seconds of the last forward outside the expert matmuls: routing, sorting, gathering and scattering (and, under EP, the all-to-all).</summary>
    public double RoutingSeconds { get; private set; }

    public override Tensor forward(Tensor x)                                         // [B, T, d]
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        double expertSeconds = 0;
        var flat = x.reshape(-1, x.shape[^1]);                                         // [N, d]
        long n = flat.shape[0];
        var r = Routing.TopK(functional.linear(flat.to(ScalarType.Float32), gate.weight!.to(ScalarType.Float32)), _k);
        var slotExpert = r.Experts.reshape(-1);                                        // [N·K]
        var (sortedExpert, order) = slotExpert.sort(stable: true);                    // slots by expert, token order inside
        var token = order.div(_k, rounding_mode: RoundingMode.floor);                 // [N·K] token of each sorted slot
        var gates = r.Gates.reshape(-1).index_select(0, order);                        // [N·K]
        var counts = r.SlotCounts().cpu().data<long>().ToArray();                     // the one host sync: split sizes
        long cap = CapacityFactor > 0 ? (long)Math.Ceiling(CapacityFactor * n * _k / _experts) : long.MaxValue;

        // Kept slots: the first min(count, cap) of each expert's segment.
        var kept = new long[_experts];
        var segments = new List<(long Offset, long Length)>();
        long off = 0, dropped = 0;
        for (int e = 0; e < _experts; e++)
        {
            kept[e] = Math.Min(counts[e], cap);
            dropped += counts[e] - kept[e];
            if (kept[e] > 0) segments.Add((off, kept[e]));
            off += counts[e];
        }
        var keptIdx = dropped == 0 ? null : cat(segments.Select(s => arange(s.Offset, s.Offset + s.Length, device: x.device)).ToArray());
        var keptToken = keptIdx is null ? token : token.index_select(0, keptIdx);     // [S] token of each kept slot
        var keptGate = keptIdx is null ? gates : gates.index_select(0, keptIdx);      // [S]
        var xs = flat.index_select(0, keptToken);                                      // [S, d] grouped by expert

        Tensor ys;
        if (ExpertGroup is { WorldSize: > 1 } group)
            ys = Parallelism.ExpertAllToAll.Run(xs, kept, group, RunLocalExperts, out expertSeconds);
        else
        {
            var t0 = clock.Elapsed.TotalSeconds;
            ys = RunLocalExperts(xs, kept);
            expertSeconds += clock.Elapsed.TotalSeconds - t0;
        }
        var y = zeros_like(flat).index_add(0, keptToken, ys * keptGate.unsqueeze(1).to(ys.dtype), 1);   // [N, d]
        Last = new MoeForwardStats(r.LoadBalancingLoss(), r.ZLoss(), counts, dropped);
        RoutingSeconds = clock.Elapsed.TotalSeconds - expertSeconds;
        return y.view(x.shape);
    }

    /// <summary>This rank's experts on rows grouped by local expert: xs [Σ counts, d], counts per local expert → [Σ counts, d].</summary>
    internal Tensor RunLocalExperts(Tensor xs, long[] countsPerLocalExpert)
    {
        var outs = new List<Tensor>();
        long off = 0;
        for (int j = 0; j < countsPerLocalExpert.Length; j++)
        {
            long c = countsPerLocalExpert[j];
            if (c == 0) continue;
            outs.Add(_local[j].Expert.forward(xs.narrow(0, off, c)));
            off += c;
        }
        return outs.Count == 0 ? xs.narrow(0, 0, 0) * 0 : outs.Count == 1 ? outs[0] : cat(outs.ToArray());
    }

    public int ExpertCount => _experts;
    /// <summary>The expert with this global index (it must be local).</summary>
    public Module<Tensor, Tensor> Expert(int index) => _local[index - _first].Expert;
    public int FirstLocalExpert => _first;
    public int LocalExperts => _local.Length;

    /// <summary>Initialises this rank's experts from a per-(seed, expert) generator, so every expert-parallel layout starts from the same weights.</summary>
    internal void InitialiseExperts(long layerSeed, double std, double residualStd)
    {
        foreach (var (index, expert) in _local)
        {
            using var g = new Generator((ulong)(layerSeed + 7919L * index));
            foreach (var (name, p) in expert.named_parameters())
            {
                if (name.EndsWith(".bias")) p.zero_();
                else p.normal_(0, name.StartsWith("w2") ? residualStd : std, g);
            }
        }
    }

    static readonly Regex ExpertIndex = new(@"\.experts\.(\d+)\.", RegexOptions.Compiled);

    /// <summary>Whether a parameter name belongs to an expert (sharded by EP, averaged over the expert-data-parallel group).</summary>
    public static bool IsExpertParameter(string name) => ExpertIndex.IsMatch(name);

    /// <summary>The global expert index in a parameter name.</summary>
    public static int ExpertOf(string name) => int.Parse(ExpertIndex.Match(name).Groups[1].Value);

    /// <summary>The same name with another expert index.</summary>
    public static string WithExpert(string name, int expert) => ExpertIndex.Replace(name, $".experts.{expert}.", 1);

    /// <summary>The model's MoE layers with their block index.</summary>
    public static IEnumerable<(int Layer, MoE Moe)> Layers(Module model) =>
        model.named_modules().Where(m => m.module is MoE).Select(m => (LayerIndex(m.name), (MoE)m.module));

    static int LayerIndex(string name) => int.Parse(Regex.Match(name, @"\.(\d+)\.").Groups[1].Value);
}
