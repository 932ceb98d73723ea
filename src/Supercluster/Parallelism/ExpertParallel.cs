using System.Diagnostics;
using Supercluster.Distributed;
using Supercluster.Model;
using static TorchSharp.torch;
using static TorchSharp.torch.autograd;

namespace Supercluster.Parallelism;

/// <summary>
/// Expert parallelism's dispatch and combine (GShard, Lepikhin et al. 2020; Megatron-LM's token dispatcher): the P
/// ranks of the expert-parallel group each hold E/P experts; every rank routes its own tokens, sends each kept slot to
/// the rank of its expert, the experts run on what they received, and the results travel back. Both exchanges are
/// all-to-all-v (<see cref="ICommunicator.AllToAll"/>) inside an autograd function whose backward is the reverse
/// all-to-all, so gradients reach the senders' tokens and the holders' experts. Slot counts are exchanged first.
/// </summary>
public static class ExpertAllToAll
{
    /// <param name="xs">[S, d] kept slots grouped by global expert (<paramref name="kept"/>[e] rows for expert e).</param>
    /// <param name="local">this rank's experts on rows grouped by local expert, with the rows per local expert.</param>
    /// <returns>[S, d] the experts' outputs for <paramref name="xs"/>, in its order.</returns>
    public static Tensor Run(Tensor xs, long[] kept, ICommunicator group, Func<Tensor, long[], Tensor> local, out double expertSeconds)
    {
        int p = group.WorldSize, experts = kept.Length, el = experts / p;
        long d = xs.shape[1];
        // 1. How many slots each source sends to each of my experts: recv[s·el + j].
        long[] recv;
        using (var send = tensor(kept, device: group.Device))
        using (var got = empty(experts, ScalarType.Int64, device: group.Device))
        {
            var each = Enumerable.Repeat((long)el, p).ToArray();
            group.AllToAll(send, each, got, each);
            using var host = got.cpu();
            recv = host.data<long>().ToArray();
        }
        var sendRows = Enumerable.Range(0, p).Select(r => kept.Skip(r * el).Take(el).Sum()).ToArray();
        var recvRows = Enumerable.Range(0, p).Select(s => recv.Skip(s * el).Take(el).Sum()).ToArray();

        // 2. Dispatch: [Σ recv, d] ordered by source rank, then by my expert.
        var received = Exchange.apply(xs, sendRows, recvRows, group);
        // 3. Regroup by local expert, run the experts, restore (source, expert) order.
        var offset = new long[p * el];
        for (int s = 0, o = 0; s < p; s++) for (int j = 0; j < el; j++) { offset[s * el + j] = o; o += (int)recv[s * el + j]; }
        var perExpert = Enumerable.Range(0, el).Select(j => Enumerable.Range(0, p).Sum(s => recv[s * el + j])).ToArray();
        var grouped = Cat(Enumerable.Range(0, el).SelectMany(j => Enumerable.Range(0, p).Select(s => (s, j)))
            .Where(sj => recv[sj.s * el + sj.j] > 0).Select(sj => received.narrow(0, offset[sj.s * el + sj.j], recv[sj.s * el + sj.j])), received);
        var clock = Stopwatch.StartNew();
        var outputs = local(grouped, perExpert);                                        // [Σ recv, d] grouped by expert
        expertSeconds = clock.Elapsed.TotalSeconds;
        var groupedOffset = new long[p * el];
        for (int j = 0, o = 0; j < el; j++) for (int s = 0; s < p; s++) { groupedOffset[s * el + j] = o; o += (int)recv[s * el + j]; }
        var back = Cat(Enumerable.Range(0, p).SelectMany(s => Enumerable.Range(0, el).Select(j => (s, j)))
            .Where(sj => recv[sj.s * el + sj.j] > 0).Select(sj => outputs.narrow(0, groupedOffset[sj.s * el + sj.j], recv[sj.s * el + sj.j])), outputs);
        // 4. Combine: each slot's output back to the rank that sent it, in its order.
        return Exchange.apply(back, recvRows, sendRows, group);
    }

    static Tensor Cat(IEnumerable<Tensor> parts, Tensor like)
    {
        var list = parts.ToArray();
        return list.Length switch { 0 => like.narrow(0, 0, 0), 1 => list[0], _ => cat(list) };
    }

    /// <summary>All-to-all-v of rows [Σ send, d] → [Σ recv, d]; backward: the reverse all-to-all of the gradient.</summary>
    sealed class Exchange : SingleTensorFunction<Exchange>
    {
        public override string Name => "ExpertAllToAll";

        public static Tensor Rows(Tensor x, long[] sendRows, long[] recvRows, ICommunicator group)
        {
            long d = x.shape[1];
            var input = x.contiguous();
            var output = empty([recvRows.Sum(), d], x.dtype, device: x.device);
            group.AllToAll(input, [.. sendRows.Select(r => r * d)], output, [.. recvRows.Select(r => r * d)]);
            return output;
        }

        public override Tensor forward(AutogradContext ctx, params object[] vars)
        {
            ctx.save_data("send", vars[1]);
            ctx.save_data("recv", vars[2]);
            ctx.save_data("group", vars[3]);
            return Rows((Tensor)vars[0], (long[])vars[1], (long[])vars[2], (ICommunicator)vars[3]);
        }

        public override List<Tensor> backward(AutogradContext ctx, Tensor grad) =>
            [Rows(grad, (long[])ctx.get_data("recv"), (long[])ctx.get_data("send"), (ICommunicator)ctx.get_data("group")), null!, null!, null!];
    }
}

/// <summary>
/// Expert parallelism applied around the model (the torchtitan "parallelize" step for MoE): the model is built with
/// this rank's experts (<see cref="CausalLM.Create"/> with an <see cref="ExpertShard"/>), then every MoE layer gets the
/// EP group and the capacity factor. Also the run's MoE lines: parameters and FLOPs (plan's formulas), metrics.
/// </summary>
public static class ExpertParallel
{
    public static void Apply(CausalLM model, ICommunicator ep, double? capacityFactor)
    {
        foreach (var (_, moe) in MoE.Layers(model))
        {
            moe.ExpertGroup = ep;
            moe.CapacityFactor = capacityFactor ?? 0;
        }
    }

    /// <summary>
    /// Total and active parameters and model FLOPs per token, from plan's formulas (<see cref="Planning.ModelSpec"/>,
    /// <see cref="Planning.FlopsModel"/>: norms and biases not counted), so train and <c>plan --json</c> print the same numbers.
    /// </summary>
    public static string Describe(ModelConfig c, int seqLen, int ep, double? capacityFactor)
    {
        var spec = Planning.FlopsModel.Spec(c);
        var inv = System.Globalization.CultureInfo.InvariantCulture;
        string moe = c.IsMoE
            ? $"; MoE: {c.MoeLayers} of {c.NLayer} blocks, {c.Experts} experts, top-{c.ActiveExperts}, {(capacityFactor is { } cf ? $"capacity factor {cf.ToString(inv)}" : "dropless")}, EP {ep} ({c.Experts / ep} experts per rank)"
            : "";
        return string.Create(inv, $"parameters (plan's count): total {spec.TotalParams}, active {spec.ActiveParams}; model FLOPs per token {Planning.FlopsModel.ModelFlopsPerToken(spec, seqLen):R} at seq {seqLen}{moe}");
    }

    /// <summary>metrics.jsonl's "moe" object: per MoE layer the fraction of routed slots per expert, losses, dropped slots; routing and all-to-all time.</summary>
    public static System.Text.Json.Nodes.JsonObject? MetricsJson(Training.StepResult r)
    {
        if (r.Moe is not { } layers) return null;
        return new System.Text.Json.Nodes.JsonObject
        {
            ["layers"] = new System.Text.Json.Nodes.JsonArray(layers.Select(l => (System.Text.Json.Nodes.JsonNode?)new System.Text.Json.Nodes.JsonObject
            {
                ["layer"] = l.Layer,
                ["load"] = new System.Text.Json.Nodes.JsonArray(l.Load.Select(f => (System.Text.Json.Nodes.JsonNode?)Math.Round(f, 5)).ToArray()),
                ["aux_loss"] = l.LoadBalancingLoss, ["z_loss"] = l.ZLoss, ["dropped"] = l.Dropped,
            }).ToArray()),
            ["aux_loss"] = layers.Average(l => l.LoadBalancingLoss), ["z_loss"] = layers.Average(l => l.ZLoss), ["dropped"] = layers.Sum(l => l.Dropped),
            ["routing_ms"] = Math.Round(r.RoutingSeconds * 1000, 2), ["all_to_all_ms"] = Math.Round(r.AllToAllSeconds * 1000, 2),
        };
    }

    /// <summary>The live line's MoE part: mean aux and z-loss, the busiest expert's load relative to uniform, dropped slots.</summary>
    public static string ShortForm(Training.StepResult r)
    {
        if (r.Moe is not { Count: > 0 } layers) return "";
        double maxLoad = layers.Max(l => l.Load.Max() * l.Load.Length);
        return $" | aux {layers.Average(l => l.LoadBalancingLoss):F3} z {layers.Average(l => l.ZLoss):F2} load max {maxLoad:F2}×{(layers.Sum(l => l.Dropped) is > 0 and var d ? $" drop {d}" : "")}";
    }
}
