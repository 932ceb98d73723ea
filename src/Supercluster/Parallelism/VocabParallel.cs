using Supercluster.Distributed;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.autograd;

namespace Supercluster.Parallelism;

/// <summary>
/// Vocabulary parallelism (Shoeybi et al. 2019 §3): each TP rank holds V/T rows of the embedding and of the output head
/// (the same rows when they are tied), so neither the table nor the [B, T, V] logits exist whole on one rank.
/// </summary>
public static class VocabParallel
{
    /// <summary>
    /// Replaces the embedding's table by this rank's rows [start, start + V/T) and makes its lookup vocabulary-parallel:
    /// ids outside the range look up row 0 and are zeroed, and the partial embeddings are summed over TP (all-reduce;
    /// under sequence parallelism a reduce-scatter leaves each rank its sequence shard).
    /// </summary>
    public static void Embedding(Embedding emb, ICommunicator tp, bool sequenceParallel, IDictionary<string, TpShard> shards, string name)
    {
        var spec = new TpShard(0);
        var part = TensorParallel.Part(spec, emb.weight!, tp);
        long rows = part.shape[0];
        emb.weight = new Parameter(part);
        shards[name] = spec;
        long start = tp.Rank * rows;
        Tensor? outside = null;    // set by the pre-hook, used by the post-hook of the same call
        emb.register_forward_pre_hook((_, ids) =>
        {
            outside = ids.lt(start).logical_or_(ids.ge(start + rows));                    // [B, T]
            return (ids - start).masked_fill_(outside, 0);
        });
        emb.register_forward_hook((_, _, y) =>
        {
            y = y.masked_fill(outside!.unsqueeze(-1), 0.0);                                 // [B, T, d]
            outside = null;
            return sequenceParallel ? Region.ReduceScatterAlong(y, 1, tp) : Region.ReduceFrom(y, tp);
        });
    }

    /// <summary>
    /// Mean cross-entropy of logits whose vocabulary is split over <paramref name="tp"/>: this rank's logits
    /// [N, V/T] hold columns [start, start + V/T), of which the first <paramref name="realColumns"/> are real tokens
    /// (the rest padding, excluded). Three all-reduces of N numbers (max, Σ exp, target logit); the gradient is
    /// softmax − one-hot on each rank's own columns, with no communication.
    /// </summary>
    public static Tensor CrossEntropy(Tensor logits, Tensor target, long start, long realColumns, ICommunicator tp) =>
        CrossEntropyFn.apply(logits, target, start, realColumns, tp);

    sealed class CrossEntropyFn : SingleTensorFunction<CrossEntropyFn>
    {
        public override string Name => "VocabParallelCrossEntropy";

        public override Tensor forward(AutogradContext ctx, params object[] vars)
        {
            var logits = (Tensor)vars[0];          // [N, Vl]
            var target = (Tensor)vars[1];          // [N]
            long start = (long)vars[2], real = (long)vars[3];
            var tp = (ICommunicator)vars[4];
            long n = logits.shape[0], width = logits.shape[1];
            using var _ = no_grad();
            var z = real < width ? logits.narrow(1, 0, real) : logits;                       // padding columns are not tokens
            // Global max per row for a stable exp: every rank's row maxima gathered ([T, N]); padding-only ranks give −∞.
            var localMax = real > 0 ? z.amax([1L]) : full(n, double.NegativeInfinity, logits.dtype, device: logits.device);
            var max = Region.AllGather(localMax.unsqueeze(0), 0, tp).amax([0L]);            // [N]
            var shifted = z - max.unsqueeze(1);                                                // [N, real]
            var exp = shifted.exp();
            var sumExp = Region.AllReduce(exp.sum([1L]), tp);                                  // [N]
            var mine = target.ge(start).logical_and_(target.lt(start + real));                 // targets in this rank's columns
            var local = (target - start).masked_fill_(mine.logical_not(), 0);
            var targetLogit = real > 0
                ? shifted.gather(1, local.unsqueeze(1)).squeeze(1).masked_fill_(mine.logical_not(), 0.0)
                : zeros(n, logits.dtype, device: logits.device);
            targetLogit = Region.AllReduce(targetLogit, tp);                                   // [N]
            var loss = (sumExp.log() - targetLogit).mean();
            // Saved for backward: softmax over this rank's columns (padding columns get 0).
            var softmax = zeros_like(logits);
            if (real > 0) softmax.narrow(1, 0, real).copy_(exp / sumExp.unsqueeze(1));
            ctx.save_for_backward([softmax, local, mine]);
            return loss;
        }

        public override List<Tensor> backward(AutogradContext ctx, Tensor grad)
        {
            var saved = ctx.get_saved_variables();
            var (softmax, local, mine) = (saved[0], saved[1], saved[2]);
            long n = softmax.shape[0];
            var g = softmax.clone();
            g.scatter_add_(1, local.unsqueeze(1), mine.to(g.dtype).neg().unsqueeze(1));      // − one-hot where the target is here
            g.mul_(grad / n);
            return [g, null!, null!, null!, null!];
        }
    }
}
