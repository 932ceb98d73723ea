using Supercluster.Data;
using Supercluster.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace Supercluster.Training;

/// <summary>Mean loss (nats/token) of an evaluation and how many tokens it covered.</summary>
public sealed record EvalResult(double Loss, long Tokens);

/// <summary>Mean next-token cross-entropy of a model over the first tokens of a split.</summary>
public static class Evaluator
{
    /// <summary>
    /// Validation tokens per evaluation unless told otherwise: the one default of both <c>train --eval-tokens</c> and
    /// <c>eval --eval-tokens</c>, so the last validation loss of a run and <c>eval</c> of its checkpoint compare.
    /// </summary>
    public const long DefaultTokens = 1 << 16;

    /// <summary>
    /// The rows validation reads: a loader of one T-token row per batch over <paramref name="split"/>, so that which rows
    /// an evaluation covers does not depend on the batch size it computes with (a B-row loader skips each shard's last
    /// rows that do not fill a batch).
    /// </summary>
    public static TokenDataLoader OpenRows(string dataDir, string split, int seqLen) => new(dataDir, split, 1, seqLen);

    /// <summary>
    /// Loss over the first ⌈tokens / T⌉ rows of <paramref name="rows"/> (from <see cref="OpenRows"/>), or all of them
    /// when the split is smaller, computed <paramref name="batchSize"/> rows at a time.
    /// </summary>
    /// <param name="loss">A parallelised model's loss (<see cref="NextTokenLoss.Batch"/>); every rank of its group evaluates together.</param>
    public static EvalResult Evaluate(CausalLM model, TokenDataLoader rows, int batchSize, int seqLen, long tokens, Device device, Func<Tensor, Tensor, Tensor>? loss = null)
    {
        if (rows.HasLossMask) return EvaluateMasked(model, rows, batchSize, seqLen, tokens, device);
        bool wasTraining = model.training;
        model.eval();
        try { return Evaluate((x, y, n) => NextTokenLoss.Batch(model, x, y, n, seqLen, device, loss).item<float>(), rows, batchSize, seqLen, tokens); }
        finally { if (wasTraining) model.train(); }
    }

    /// <summary>The same over any computation of a batch's mean loss (ids, targets, rows), e.g. a pipeline's forward pass.</summary>
    public static EvalResult Evaluate(Func<long[], long[], int, double> batchLoss, TokenDataLoader rows, int batchSize, int seqLen, long tokens)
    {
        if (tokens <= 0) throw new BadInputException($"--eval-tokens = {tokens}, expected a positive number");
        if (batchSize <= 0) throw new BadInputException($"--batch-size = {batchSize}, expected a positive number");
        rows.Reset();
        long wanted = (tokens + seqLen - 1) / seqLen, done = 0;
        var (xr, yr) = (new long[seqLen], new long[seqLen]);
        var (x, y) = (new long[batchSize * seqLen], new long[batchSize * seqLen]);
        double sum = 0;   // Σ over batches of mean loss × rows; every row has T tokens, so sum / rows is the per-token mean
        bool splitRead = false;
        using (no_grad())
        {
            while (done < wanted && !splitRead)
            {
                int n = 0;
                while (n < batchSize && done + n < wanted && !splitRead)
                {
                    rows.NextBatch(xr, yr);
                    Array.Copy(xr, 0, x, n * seqLen, seqLen);
                    Array.Copy(yr, 0, y, n * seqLen, seqLen);
                    n++;
                    splitRead = rows.State.Epoch > 0;   // the loader wrapped: every row of the split has been read once
                }
                using var scope = NewDisposeScope();
                var (xs, ys) = n == batchSize ? (x, y) : (x[..(n * seqLen)], y[..(n * seqLen)]);
                sum += batchLoss(xs, ys, n) * n;
                done += n;
            }
        }
        return new EvalResult(sum / done, done * seqLen);
    }

    /// <summary>Loss-masked data (chat): mean over the trained targets only, attention within each conversation.</summary>
    static EvalResult EvaluateMasked(CausalLM model, TokenDataLoader rows, int batchSize, int seqLen, long tokens, Device device)
    {
        if (tokens <= 0) throw new BadInputException($"--eval-tokens = {tokens}, expected a positive number");
        if (batchSize <= 0) throw new BadInputException($"--batch-size = {batchSize}, expected a positive number");
        rows.Reset();
        long wanted = (tokens + seqLen - 1) / seqLen, done = 0;
        var (xr, yr, mr) = (new long[seqLen], new long[seqLen], new byte[seqLen]);
        var (x, y, m) = (new long[batchSize * seqLen], new long[batchSize * seqLen], new byte[batchSize * seqLen]);
        double maskedSum = 0; long trained = 0;   // loss-masked data (chat): Σ loss and count over trained targets only
        bool wasTraining = model.training;
        model.eval();
        double sum = 0;   // Σ over batches of mean loss × rows; every row has T tokens, so sum / rows is the per-token mean
        bool splitRead = false;
        using (no_grad())
        {
            while (done < wanted && !splitRead)
            {
                int n = 0;
                while (n < batchSize && done + n < wanted && !splitRead)
                {
                    if (rows.HasLossMask) { rows.NextBatch(xr, yr, mr); Array.Copy(mr, 0, m, n * seqLen, seqLen); }
                    else rows.NextBatch(xr, yr);
                    Array.Copy(xr, 0, x, n * seqLen, seqLen);
                    Array.Copy(yr, 0, y, n * seqLen, seqLen);
                    n++;
                    splitRead = rows.State.Epoch > 0;   // the loader wrapped: every row of the split has been read once
                }
                using var scope = NewDisposeScope();
                var (xs, ys) = n == batchSize ? (x, y) : (x[..(n * seqLen)], y[..(n * seqLen)]);
                if (rows.HasLossMask)
                {
                    var ms = n == batchSize ? m : m[..(n * seqLen)];
                    maskedSum += NextTokenLoss.MaskedSum(model, xs, ys, ms, n, seqLen, device, rows.Meta.EotToken).item<float>();
                    foreach (var b in ms) trained += b != 0 ? 1 : 0;
                }
                else sum += NextTokenLoss.Batch(model, xs, ys, n, seqLen, device).item<float>() * n;
                done += n;
            }
        }
        if (wasTraining) model.train();
        if (rows.HasLossMask) return new EvalResult(trained > 0 ? maskedSum / trained : double.NaN, trained);
        return new EvalResult(sum / done, done * seqLen);
    }
}
