using Supercluster.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace Supercluster.Evaluation;

/// <summary>
/// A token sequence of which the tokens from <see cref="From"/> on are scored, each given all tokens before it
/// (1 ≤ From &lt; length: the first token has nothing to be predicted from, and at least one token is scored). At most the model context + 1 tokens: the last token
/// is only ever a target.
/// </summary>
public sealed record ScoredRow(int[] Tokens, int From)
{
    public int Scored => Tokens.Length - From;
}

/// <summary>Σ −log p(token | prefix) over a row's scored tokens (nats) and how many there were.</summary>
public readonly record struct RowScore(double SumNats, int Tokens)
{
    public double MeanNats => SumNats / Tokens;
}

/// <summary>
/// Log-likelihood of chosen tokens under a model, in batched forwards: the one computation behind multiple-choice task
/// scores and bits-per-byte. Rows of a batch are right-padded to the longest; under causal attention a padding token
/// comes after every position that is read, so it changes nothing but the tensor shape.
/// </summary>
public static class LikelihoodScorer
{
    const long IgnoreIndex = -100;

    /// <summary>
    /// Scores every row of every group. The rows of one group go through one forward together (the endings of one
    /// question); groups are packed into forwards of up to <paramref name="batchRows"/> rows (a larger group is a
    /// forward of its own). Results are in the order of the input.
    /// </summary>
    public static RowScore[][] Score(CausalLM model, IReadOnlyList<IReadOnlyList<ScoredRow>> groups, int batchRows, Device device)
    {
        if (batchRows <= 0) throw new BadInputException($"--batch-size = {batchRows}, expected a positive number");
        int context = model.Config.SeqLen;
        foreach (var g in groups)
            foreach (var r in g)
                if (r.From < 1 || r.From >= r.Tokens.Length || r.Tokens.Length > context + 1)
                    throw new ArgumentException($"row of {r.Tokens.Length} tokens scored from {r.From}: expected 1 ≤ from < length ≤ context + 1 = {context + 1}");
        var results = groups.Select(g => new RowScore[g.Count]).ToArray();
        bool wasTraining = model.training;
        model.eval();
        try
        {
            using var _ = no_grad();
            // Longest groups first: batches hold rows of similar length, so little padding is computed.
            var order = Enumerable.Range(0, groups.Count).OrderByDescending(i => groups[i].Count == 0 ? 0 : groups[i].Max(r => r.Tokens.Length)).ToList();
            var batch = new List<int>();
            int rows = 0;
            foreach (int gi in order)
            {
                if (groups[gi].Count == 0) continue;
                if (rows > 0 && rows + groups[gi].Count > batchRows) { Forward(model, groups, batch, results, device); batch.Clear(); rows = 0; }
                batch.Add(gi);
                rows += groups[gi].Count;
            }
            if (rows > 0) Forward(model, groups, batch, results, device);
        }
        finally
        {
            if (wasTraining) model.train();
        }
        return results;
    }

    /// <summary>One forward over the rows of <paramref name="batch"/>'s groups; fills their scores.</summary>
    static void Forward(CausalLM model, IReadOnlyList<IReadOnlyList<ScoredRow>> groups, List<int> batch, RowScore[][] results, Device device)
    {
        using var scope = NewDisposeScope();
        var rows = batch.SelectMany(gi => groups[gi].Select((r, ri) => (gi, ri, r))).ToList();
        int b = rows.Count, t = rows.Max(x => x.r.Tokens.Length) - 1;   // inputs are every token but the last
        var input = new long[b * t];
        var target = new long[b * t];
        Array.Fill(target, IgnoreIndex);    // context and padding positions: not scored
        for (int i = 0; i < b; i++)
        {
            var tok = rows[i].r.Tokens;
            for (int p = 0; p < tok.Length - 1; p++) input[i * t + p] = tok[p];   // right padding stays token 0
            for (int p = rows[i].r.From; p < tok.Length; p++) target[i * t + p - 1] = tok[p];
        }
        var logits = model.forward(tensor(input, [b, t], device: device));                        // [B, T, V]
        // −log softmax at the target (fp32 under any compute dtype); 0 where ignored. Not a [N, V] copy of the logits.
        var nll = nn.functional.cross_entropy(logits.view(b * t, -1).to(ScalarType.Float32), tensor(target, device: device),
            ignore_index: IgnoreIndex, reduction: nn.Reduction.None);                                // [B·T]
        var losses = nll.to(ScalarType.Float64).cpu().data<double>().ToArray();
        for (int i = 0; i < b; i++)
        {
            var (gi, ri, r) = rows[i];
            double sum = 0;
            for (int p = r.From; p < r.Tokens.Length; p++) sum += losses[i * t + p - 1];
            results[gi][ri] = new RowScore(sum, r.Scored);
        }
    }
}
