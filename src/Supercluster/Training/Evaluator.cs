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
        bool wasTraining = model.training;
        model.eval();
        try
        {
            return Evaluate((x, y, m, n) => m is null
                ? (NextTokenLoss.Batch(model, x, y, n, seqLen, device, loss).item<float>() * n * seqLen, (long)n * seqLen)
                // Loss-masked data (chat): Σ over the trained targets only, attention within each conversation.
                : (NextTokenLoss.MaskedSum(model, x, y, m, n, seqLen, device, rows.Meta.EotToken).item<float>(), m.LongCount(b => b != 0)),
                rows, batchSize, seqLen, tokens);
        }
        finally { if (wasTraining) model.train(); }
    }

    /// <summary>The same over any computation of a batch's mean loss (ids, targets, rows), e.g. a pipeline's forward pass.</summary>
    public static EvalResult Evaluate(Func<long[], long[], int, double> batchLoss, TokenDataLoader rows, int batchSize, int seqLen, long tokens) =>
        Evaluate((x, y, _, n) => (batchLoss(x, y, n) * n * seqLen, (long)n * seqLen), rows, batchSize, seqLen, tokens);

    /// <summary>
    /// The one evaluation loop: <paramref name="batch"/> returns (Σ loss, targets counted) for n rows (ids, targets, loss
    /// mask or null, n); the result is the per-target mean. Every unmasked row counts T targets.
    /// </summary>
    static EvalResult Evaluate(Func<long[], long[], byte[]?, int, (double Sum, long Count)> batch, TokenDataLoader rows, int batchSize, int seqLen, long tokens)
    {
        if (tokens <= 0) throw new BadInputException($"--eval-tokens = {tokens}, expected a positive number");
        if (batchSize <= 0) throw new BadInputException($"--batch-size = {batchSize}, expected a positive number");
        rows.Reset();
        bool masked = rows.HasLossMask;
        long wanted = (tokens + seqLen - 1) / seqLen, done = 0;
        var (xr, yr, mr) = (new long[seqLen], new long[seqLen], new byte[seqLen]);
        var (x, y, m) = (new long[batchSize * seqLen], new long[batchSize * seqLen], new byte[batchSize * seqLen]);
        double sum = 0; long count = 0;
        bool splitRead = false;
        using (no_grad())
        {
            while (done < wanted && !splitRead)
            {
                int n = 0;
                while (n < batchSize && done + n < wanted && !splitRead)
                {
                    if (masked) { rows.NextBatch(xr, yr, mr); Array.Copy(mr, 0, m, n * seqLen, seqLen); }
                    else rows.NextBatch(xr, yr);
                    Array.Copy(xr, 0, x, n * seqLen, seqLen);
                    Array.Copy(yr, 0, y, n * seqLen, seqLen);
                    n++;
                    splitRead = rows.State.Epoch > 0;   // the loader wrapped: every row of the split has been read once
                }
                using var scope = NewDisposeScope();
                bool full = n == batchSize;
                var (s, c) = batch(full ? x : x[..(n * seqLen)], full ? y : y[..(n * seqLen)], masked ? (full ? m : m[..(n * seqLen)]) : null, n);
                sum += s; count += c;
                done += n;
            }
        }
        return new EvalResult(count > 0 ? sum / count : double.NaN, count);
    }
}
