using Supercluster.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace Supercluster.Inference;

/// <summary>How to pick each next token. Temperature 0 is greedy; TopK 0 and TopP 1 disable those filters.</summary>
public sealed record SamplingOptions
{
    public int MaxNewTokens { get; init; } = 100;
    public double Temperature { get; init; } = 1.0;
    public int TopK { get; init; } = 0;
    public double TopP { get; init; } = 1.0;
    public long Seed { get; init; } = 0;
    public bool UseCache { get; init; } = true;
    /// <summary>Generation ends after this token (e.g. end-of-text), which is included in the output.</summary>
    public int? StopToken { get; init; }
    /// <summary>OpenAI's penalties over generated tokens (see <see cref="LogitsProcessors"/>); 0 = off.</summary>
    public double PresencePenalty { get; init; }
    public double FrequencyPenalty { get; init; }
    /// <summary>Added to the logits of these token ids before sampling.</summary>
    public IReadOnlyDictionary<int, float>? LogitBias { get; init; }
    /// <summary>Record each token's logprob and this many alternatives (-1 = no logprobs).</summary>
    public int TopLogprobs { get; init; } = -1;
    /// <summary>With <see cref="TopLogprobs"/> ≥ 0: also the prompt's tokens' logprobs (OpenAI's echo).</summary>
    public bool PromptLogprobs { get; init; }
    /// <summary>Makes the sequence's structured-output constraint (a fresh one per sequence); null = free text.</summary>
    public Func<Structured.TokenConstraint>? Constraint { get; init; }
    /// <summary>
    /// Per sequence, before sampling: (tokens generated so far, logits row [V] float32) → the logits to sample from
    /// (penalties, logit_bias, a grammar mask). The batch scheduler calls it for this sequence's row only.
    /// </summary>
    public Func<IReadOnlyList<int>, Tensor, Tensor>? LogitsProcessor { get; init; }

    public SamplingOptions Validate()
    {
        if (MaxNewTokens < 0) throw new BadInputException($"--max-new-tokens = {MaxNewTokens}, expected ≥ 0");
        if (!(Temperature >= 0) || double.IsInfinity(Temperature)) throw new BadInputException($"--temperature = {Temperature}, expected a finite number ≥ 0");
        if (TopK < 0) throw new BadInputException($"--top-k = {TopK}, expected ≥ 0 (0 = off)");
        if (!(TopP > 0 && TopP <= 1)) throw new BadInputException($"--top-p = {TopP}, expected in (0, 1]");
        return this;
    }
}

/// <summary>Autoregressive generation with a KV cache (or without, for reference), from a seeded generator of its own.</summary>
public static class Sampler
{
    /// <summary>Returns prompt + new tokens; <paramref name="onToken"/> sees each new token as it is chosen.</summary>
    public static int[] Generate(CausalLM model, IReadOnlyList<int> prompt, SamplingOptions o, Device device, Action<int>? onToken = null)
    {
        o.Validate();
        if (prompt.Count == 0) throw new BadInputException("prompt is empty: give at least one token (e.g. end-of-text)");
        int ctx = model.Config.SeqLen;
        if (prompt.Count > ctx) throw new BadInputException($"prompt of {prompt.Count} tokens exceeds the model context {ctx}");
        var tokens = new List<int>(prompt);
        bool wasTraining = model.training;
        model.eval();
        using var gen = new Generator((ulong)o.Seed, device);
        KvCache? cache = null;
        try
        {
            using var _ = no_grad();
            for (int i = 0; i < o.MaxNewTokens; i++)
            {
                using var scope = NewDisposeScope();
                Tensor logits;
                if (o.UseCache)
                {
                    if (cache is null || cache.Length >= ctx)
                    {
                        // (Re)fill the cache with the newest tokens that fit, leaving room to continue.
                        cache?.Dispose();
                        cache = new KvCache(model.Config, 1, device, model.parameters().First().dtype);
                        int keep = tokens.Count < ctx ? tokens.Count : ctx / 2;
                        logits = model.Forward(Ids(tokens.Skip(tokens.Count - keep), device), cache);
                    }
                    else
                    {
                        logits = model.Forward(Ids([tokens[^1]], device), cache);
                    }
                }
                else
                {
                    // Reference path: the whole (cropped) sequence every step.
                    logits = model.Forward(Ids(tokens.Skip(Math.Max(0, tokens.Count - ctx)), device), null);
                }
                int next = Pick(logits[0, -1].to(ScalarType.Float32), o, gen);
                tokens.Add(next);
                onToken?.Invoke(next);
                if (next == o.StopToken) break;
            }
        }
        finally
        {
            cache?.Dispose();
            if (wasTraining) model.train();
        }
        return tokens.ToArray();
    }

    static Tensor Ids(IEnumerable<int> ids, Device device) =>
        tensor(ids.Select(i => (long)i).ToArray(), device: device).unsqueeze(0); // [1, T]

    /// <summary>
    /// Below this temperature sampling is greedy (as vLLM): logits / 1e-38 overflow to inf and softmax gives NaN, and
    /// the distribution is one-hot long before that anyway.
    /// </summary>
    public const double GreedyBelow = 1e-5;

    public static bool IsGreedy(SamplingOptions o) => o.Temperature < GreedyBelow;

    /// <summary>
    /// Greedy, or temperature / top-k / nucleus (Holtzman et al. 2020) sampling from logits [V]. Non-finite logits
    /// (a diverged model) never reach multinomial: NaN tokens are never chosen, +inf ones always; with no finite logit
    /// at all the sequence fails with a clear error (and only that sequence).
    /// </summary>
    public static int Pick(Tensor logits, SamplingOptions o, Generator gen)
    {
        if (!logits.isfinite().all().item<bool>()) logits = Finite(logits);
        if (IsGreedy(o)) return (int)logits.argmax().item<long>();
        logits = logits / o.Temperature;
        if (o.TopK > 0 && o.TopK < logits.shape[0])
        {
            var kth = logits.topk(o.TopK).values[-1];
            logits = logits.masked_fill(logits < kth, double.NegativeInfinity);
        }
        if (o.TopP < 1)
        {
            var (sorted, order) = logits.sort(descending: true);
            var cum = sorted.softmax(0).cumsum(0);
            var drop = (cum - sorted.softmax(0)) > o.TopP;   // keep the smallest prefix whose mass reaches top_p
            logits = logits.scatter(0, order, sorted.masked_fill(drop, double.NegativeInfinity));
        }
        var probs = logits.softmax(0);
        return (int)multinomial(probs, 1, generator: gen).item<long>();
    }

    /// <summary>NaN → −inf; any +inf → those tokens only (equally likely); nothing left → an error.</summary>
    static Tensor Finite(Tensor logits)
    {
        var posInf = logits.isposinf();
        if (posInf.any().item<bool>()) return zeros_like(logits).masked_fill(posInf.logical_not(), double.NegativeInfinity);
        logits = logits.nan_to_num(nan: double.NegativeInfinity, neginf: double.NegativeInfinity);
        if (!(logits > double.NegativeInfinity).any().item<bool>())
            throw new InvalidOperationException("the model produced no finite logit (NaN/inf): the weights or activations have diverged");
        return logits;
    }
}
