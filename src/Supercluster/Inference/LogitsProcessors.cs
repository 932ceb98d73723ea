using System.Collections.Concurrent;
using Supercluster.Inference.Structured;
using TorchSharp;
using static TorchSharp.torch;

namespace Supercluster.Inference;

/// <summary>A chosen token's log-probability under the model and the most likely alternatives at that position.</summary>
public sealed record TokenLogprob(int Token, float Logprob, IReadOnlyList<(int Token, float Logprob)> Top);

/// <summary>
/// What is done to a row of logits before sampling (OpenAI semantics, as vLLM): logit_bias is added, then
/// frequency and presence penalties over the tokens generated so far:
/// <c>logit[j] − count[j]·frequency_penalty − (count[j] &gt; 0)·presence_penalty</c>.
/// </summary>
public static class LogitsProcessors
{
    /// <summary>logits [V] → processed logits [V] (a new tensor; the input is not changed).</summary>
    public static Tensor Apply(Tensor logits, SamplingOptions o, IReadOnlyDictionary<int, int> counts)
    {
        if (o.LogitBias is { Count: > 0 } bias)
            logits = logits.index_add(0, tensor(bias.Keys.Select(k => (long)k).ToArray(), device: logits.device),
                tensor(bias.Values.ToArray(), device: logits.device).to(logits.dtype), 1);
        if ((o.FrequencyPenalty != 0 || o.PresencePenalty != 0) && counts.Count > 0)
        {
            var ids = counts.Keys.Select(k => (long)k).ToArray();
            var delta = counts.Values.Select(c => (float)-(c * o.FrequencyPenalty + o.PresencePenalty)).ToArray();
            logits = logits.index_add(0, tensor(ids, device: logits.device), tensor(delta, device: logits.device).to(logits.dtype), 1);
        }
        return logits;
    }

    /// <summary>Only <paramref name="allowed"/> tokens keep their logits; the rest become −inf.</summary>
    public static Tensor Mask(Tensor logits, int[] allowed)
    {
        var idx = tensor(allowed.Select(t => (long)t).ToArray(), device: logits.device);
        return full_like(logits, double.NegativeInfinity).index_copy(0, idx, logits.index_select(0, idx));
    }
}

/// <summary>
/// The per-sequence part of sampling that the scheduler calls where logits become the next token: logits processors,
/// the structured-output mask, the sequence's own seeded generator (so a seeded request repeats whatever else is in
/// the batch), and the log-probabilities the request asked for (of the model's distribution, before any processing,
/// as OpenAI and vLLM report them).
/// </summary>
public sealed class SequenceSampler
{
    readonly SamplingOptions _o;
    readonly Generator _gen;
    readonly TokenConstraint? _constraint;
    readonly Dictionary<int, int> _counts = [];
    int _generated;

    public SequenceSampler(SamplingOptions o, Generator gen)
    {
        _o = o;
        _gen = gen;
        _constraint = o.Constraint?.Invoke();
    }

    /// <summary>Greedy with nothing to apply: the scheduler may take the batch's argmax instead of calling <see cref="Next"/>.</summary>
    public static bool PlainGreedy(SamplingOptions o) =>
        Sampler.IsGreedy(o) && o.TopLogprobs < 0 && o.Constraint is null && o.LogitBias is not { Count: > 0 }
        && o.FrequencyPenalty == 0 && o.PresencePenalty == 0;

    /// <summary>One entry per generated token when logprobs were asked for, queued before the token itself is sent.</summary>
    public ConcurrentQueue<TokenLogprob> Logprobs { get; } = new();

    /// <summary>The prompt's tokens after the first (each given the ones before), when prompt logprobs were asked for.</summary>
    public TokenLogprob[]? PromptLogprobs { get; private set; }

    /// <summary>After a prefill: logits [T, V] of the prompt's positions; records prompt logprobs if asked; returns the first token.</summary>
    public int Prefilled(Tensor logits, IReadOnlyList<int> prompt)
    {
        if (_o.PromptLogprobs && _o.TopLogprobs >= 0)
        {
            int t = (int)logits.shape[0];
            var rows = logits[..(t - 1)].to(ScalarType.Float32).log_softmax(1);                       // [T-1, V]
            var next = tensor(prompt.Skip(1).Take(t - 1).Select(x => (long)x).ToArray(), device: rows.device);
            var chosen = rows.gather(1, next.unsqueeze(1)).squeeze(1).cpu().data<float>().ToArray();
            var (topV, topI) = Top(rows, _o.TopLogprobs);
            PromptLogprobs = Enumerable.Range(0, t - 1).Select(i => new TokenLogprob(prompt[i + 1], chosen[i],
                Enumerable.Range(0, _o.TopLogprobs).Select(k => ((int)topI[i * _o.TopLogprobs + k], topV[i * _o.TopLogprobs + k])).ToArray())).ToArray();
        }
        return Next(logits[-1].to(ScalarType.Float32));
    }

    static (float[] Values, long[] Indices) Top(Tensor rows, int k)
    {
        if (k == 0) return ([], []);
        var (v, i) = rows.topk(k, dim: -1);
        return (v.cpu().data<float>().ToArray(), i.cpu().data<long>().ToArray());
    }

    /// <summary>logits [V] (float32) → the next token.</summary>
    public int Next(Tensor logits)
    {
        var x = LogitsProcessors.Apply(logits, _o, _counts);
        if (_constraint?.Allowed(_o.MaxNewTokens - _generated) is { } allowed) x = LogitsProcessors.Mask(x, allowed);
        int token = Sampler.Pick(x, _o, _gen);
        if (_o.TopLogprobs >= 0)
        {
            var row = logits.log_softmax(0);
            var (v, i) = Top(row, _o.TopLogprobs);
            Logprobs.Enqueue(new TokenLogprob(token, row[token].item<float>(), v.Zip(i, (lp, id) => ((int)id, lp)).ToArray()));
        }
        _generated++;
        _counts[token] = _counts.GetValueOrDefault(token) + 1;
        _constraint?.Accept(token);
        return token;
    }
}
