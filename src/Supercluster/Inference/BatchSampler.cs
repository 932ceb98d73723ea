using TorchSharp;
using static TorchSharp.torch;

namespace Supercluster.Inference;

/// <summary>
/// Picks the next token of every row of a batch's logits at once: greedy rows by one argmax, sampled rows by one
/// vectorised temperature / top-k / top-p (each row with its own values) and softmax, then one multinomial draw per
/// row from that sequence's own seeded generator (so a seeded sequence samples the same whatever its neighbours).
/// Rows with non-finite logits, or whose options ask for more than temperature/top-k/top-p (a logits processor, or
/// options this class does not know), go through <see cref="Sampler.Pick"/> one by one, after their processor.
/// </summary>
public static class BatchSampler
{
    static readonly SamplingOptions Plain = new() { MaxNewTokens = 0, Temperature = 0, TopK = 0, TopP = 1, Seed = 0, UseCache = true, StopToken = null };

    /// <summary>Options that only set temperature / top-k / top-p (plus length, seed and stop token): record equality catches any other field.</summary>
    public static bool IsPlain(SamplingOptions o) =>
        o with { MaxNewTokens = 0, Temperature = 0, TopK = 0, TopP = 1, Seed = 0, UseCache = true, StopToken = null } == Plain;

    /// <summary>
    /// The next token of each row of <paramref name="logits"/> [B, V] (float32); a row that fails (no finite logit)
    /// gets its exception instead, and only that row. <paramref name="generated"/>[i] are row i's tokens so far (for
    /// its logits processor). <paramref name="plain"/>[i] = <see cref="IsPlain"/>(options[i]) when the caller knows it already.
    /// </summary>
    public static (int Token, Exception? Error)[] Pick(Tensor logits, IReadOnlyList<SamplingOptions> options, IReadOnlyList<Generator> generators,
        IReadOnlyList<IReadOnlyList<int>> generated, IReadOnlyList<bool>? plain = null)
    {
        int b = options.Count;
        var result = new (int, Exception?)[b];
        using var scope = NewDisposeScope();
        // float32 rows in host memory are scanned here (finite + first maximum, one pass each): the ops and copies
        // this replaces cost more than a small vocabulary's arithmetic; elsewhere one host sync of the finiteness.
        var host = logits.device_type == DeviceType.CPU && logits.dtype == ScalarType.Float32 && logits.stride(1) == 1 ? Scan(logits) : ((bool[] Finite, int[] Best)?)null;
        var finite = host?.Finite ?? logits.isfinite().all(1).cpu().data<bool>().ToArray();
        var greedy = new List<int>();
        var sampled = new List<int>();
        for (int i = 0; i < b; i++)
        {
            var o = options[i];
            if (!finite[i] || !(plain?[i] ?? IsPlain(o)))
            {
                try
                {
                    var row = logits[i];
                    if (o.LogitsProcessor is { } f) row = f(generated[i], row);
                    result[i] = (Sampler.Pick(row, o, generators[i]), null);
                }
                catch (Exception e) { result[i] = (-1, e); }
            }
            else if (Sampler.IsGreedy(o)) greedy.Add(i);
            else sampled.Add(i);
        }
        if (greedy.Count > 0)
        {
            if (host is not null)
                foreach (int i in greedy) result[i] = (host.Value.Best[i], null);
            else
            {
                var rows = greedy.Count == b ? logits : logits.index_select(0, Index(greedy, logits.device));
                var best = rows.argmax(1).cpu().data<long>().ToArray();
                for (int j = 0; j < greedy.Count; j++) result[greedy[j]] = ((int)best[j], null);
            }
        }
        if (sampled.Count > 0)
        {
            var tokens = Sample(logits.index_select(0, Index(sampled, logits.device)), sampled.Select(i => options[i]).ToArray(), sampled.Select(i => generators[i]).ToArray());
            for (int j = 0; j < sampled.Count; j++) result[sampled[j]] = (tokens[j], null);
        }
        return result;
    }

    /// <summary>
    /// Per row of float32 CPU logits [B, V] (unit stride along V): whether every logit is finite, and the index of the
    /// first maximum (torch.argmax's choice on ties). Finite: Σ x·0 is 0 exactly when no x is ±inf or NaN.
    /// </summary>
    internal static unsafe (bool[] Finite, int[] Best) Scan(Tensor logits)
    {
        int b = (int)logits.shape[0];
        long v = logits.shape[1], stride = logits.stride(0);
        var finite = new bool[b];
        var best = new int[b];
        float* p0 = (float*)Runtime.LibTorchLoader.DataPtr(logits);
        int w = System.Numerics.Vector<float>.Count;
        for (int i = 0; i < b; i++)
        {
            var row = new ReadOnlySpan<float>(p0 + i * stride, (int)v);
            var max = new System.Numerics.Vector<float>(float.NegativeInfinity);
            var zero = System.Numerics.Vector<float>.Zero;
            int j = 0;
            for (; j + w <= row.Length; j += w)
            {
                var x = new System.Numerics.Vector<float>(row.Slice(j, w));
                max = System.Numerics.Vector.Max(max, x);
                zero += x * System.Numerics.Vector<float>.Zero;
            }
            float m = float.NegativeInfinity, z = 0;
            for (int l = 0; l < w; l++) { m = MathF.Max(m, max[l]); z += zero[l]; }
            for (; j < row.Length; j++) { m = MathF.Max(m, row[j]); z += row[j] * 0; }
            finite[i] = z == 0;
            best[i] = finite[i] ? row.IndexOf(m) : -1;
        }
        return (finite, best);
    }

    static Tensor Index(List<int> rows, Device device) => tensor(rows.Select(i => (long)i).ToArray(), device: device);

    /// <summary>Temperature, top-k, nucleus (Holtzman et al. 2020) on [S, V] with per-row values, as <see cref="Sampler.Pick"/> does on one row.</summary>
    static int[] Sample(Tensor logits, SamplingOptions[] o, Generator[] gens)
    {
        int s = o.Length;
        long vocab = logits.shape[1];
        var dev = logits.device;
        logits = logits / tensor(o.Select(x => (float)x.Temperature).ToArray(), device: dev).unsqueeze(1);     // [S, V]
        bool topK = o.Any(x => x.TopK > 0 && x.TopK < vocab), topP = o.Any(x => x.TopP < 1);
        if (topK || topP)
        {
            var (sorted, order) = logits.sort(1, descending: true);                                                // [S, V]
            if (topK)
            {
                // The k-th largest value per row (k = V where top-k is off: keeps everything).
                var k = tensor(o.Select(x => x.TopK > 0 && x.TopK < vocab ? (long)x.TopK - 1 : vocab - 1).ToArray(), device: dev).unsqueeze(1);
                var kth = sorted.gather(1, k);                                                                      // [S, 1]
                logits = logits.masked_fill(logits < kth, double.NegativeInfinity);
                sorted = sorted.masked_fill(sorted < kth, double.NegativeInfinity);
            }
            if (topP)
            {
                var p = tensor(o.Select(x => x.TopP < 1 ? x.TopP : double.PositiveInfinity).ToArray(), device: dev).to(ScalarType.Float32).unsqueeze(1);
                var probs = sorted.softmax(1);
                var drop = (probs.cumsum(1) - probs) > p;            // keep the smallest prefix whose mass reaches top_p
                logits = logits.scatter(1, order, sorted.masked_fill(drop, double.NegativeInfinity));
            }
        }
        var all = logits.softmax(1);                                                                              // [S, V]
        var picks = new Tensor[s];
        for (int i = 0; i < s; i++) picks[i] = multinomial(all[i], 1, generator: gens[i]);                     // each row its own generator
        return cat(picks).cpu().data<long>().Select(x => (int)x).ToArray();
    }
}
