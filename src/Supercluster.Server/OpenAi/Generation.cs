using Supercluster.Inference;

namespace Supercluster.Server.OpenAi;

/// <summary>The parsed sampling part of a completion/chat request.</summary>
public sealed record GenerationParams(int MaxTokens, double Temperature, double TopP, int N, IReadOnlyList<string> Stops, long? Seed, bool Stream);

/// <summary>One choice's result.</summary>
public sealed record ChoiceResult(int Index, string Text, string FinishReason, int CompletionTokens);

/// <summary>Runs the choices of one request through the scheduler, turning tokens into text and applying stop sequences.</summary>
public static class Generation
{
    public static GenerationParams Parse(RequestReader r, int promptTokens, LoadedModel m, ServerOptions o, IEnumerable<string> extraStops)
    {
        int maxLimit = Math.Min(o.MaxTokensLimit, m.Context);
        var maxTokens = (int)(r.Integer("max_tokens", 0, int.MaxValue) ?? r.Integer("max_completion_tokens", 0, int.MaxValue) ?? Math.Min(16, m.Context - promptTokens));
        if (maxTokens > maxLimit)
            throw ApiException.BadRequest($"max_tokens = {maxTokens} is over the limit of {maxLimit}", "max_tokens", "max_tokens_too_large");
        if (promptTokens + maxTokens > m.Context)
            throw ApiException.BadRequest($"this model's context is {m.Context} tokens; the prompt has {promptTokens} and max_tokens is {maxTokens} (together {promptTokens + maxTokens})",
                "max_tokens", "context_length_exceeded");
        var temperature = r.Number("temperature", 0, 2) ?? 1.0;
        var topP = r.Number("top_p", 0, 1) ?? 1.0;
        if (topP == 0) topP = 1e-9; // OpenAI accepts 0 (= greedy-like); keep the top token
        var n = (int)(r.Integer("n", 1, o.MaxChoices) ?? 1);
        var stops = r.Strings("stop", 4) ?? [];
        var seed = r.Integer("seed", long.MinValue, long.MaxValue);
        var stream = r.Bool("stream") ?? false;
        return new GenerationParams(maxTokens, temperature, topP, n, [.. stops, .. extraStops], seed, stream);
    }

    /// <summary>
    /// Submits all choices at once (so they share decode steps) and awaits them. <paramref name="onDelta"/> (for
    /// streams) receives (choice, text) as text becomes safe to show. Cancelling <paramref name="ct"/> (client gone)
    /// removes the sequences from the batch.
    /// </summary>
    public static async Task<ChoiceResult[]> RunAsync(LoadedModel m, int[] prompt, GenerationParams p, TimeSpan timeLimit,
        Func<int, string, Task>? onDelta, CancellationToken ct)
    {
        long baseSeed = p.Seed ?? Random.Shared.NextInt64();
        var tasks = new Task<ChoiceResult>[p.N];
        using var timeout = new CancellationTokenSource(timeLimit);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(ct, timeout.Token);
        var sequences = new List<(GenerationHandle H, CancellationTokenSource Stop)>();
        try
        {
            var stops = Enumerable.Range(0, p.N).Select(_ => CancellationTokenSource.CreateLinkedTokenSource(linked.Token)).ToArray();
            var choices = stops.Select((stop, i) => (new SamplingOptions
            {
                MaxNewTokens = p.MaxTokens, Temperature = p.Temperature, TopP = p.TopP, Seed = baseSeed + i,
                StopToken = m.Tokenizer.EotToken,
            }, stop.Token)).ToArray();
            try
            {
                var handles = m.Scheduler.SubmitGroup(prompt, choices);   // admitted together: seeded requests repeat exactly
                for (int i = 0; i < p.N; i++) sequences.Add((handles[i], stops[i]));
            }
            catch
            {
                foreach (var s in stops) s.Dispose();
                throw;
            }
        }
        catch
        {
            foreach (var (_, s) in sequences) { s.Cancel(); s.Dispose(); }
            throw;
        }
        for (int i = 0; i < p.N; i++) tasks[i] = Collect(i, sequences[i].H, sequences[i].Stop, m, p, onDelta, timeout);
        try { return await Task.WhenAll(tasks); }
        finally { foreach (var (_, s) in sequences) s.Dispose(); }
    }

    static async Task<ChoiceResult> Collect(int index, GenerationHandle h, CancellationTokenSource stop, LoadedModel m, GenerationParams p,
        Func<int, string, Task>? onDelta, CancellationTokenSource timeout)
    {
        var decoder = new TokenTextDecoder(m.Tokenizer);
        var matcher = new StopMatcher(p.Stops);
        var text = new System.Text.StringBuilder();
        int count = 0;
        bool eot = false;
        async Task Show(string s)
        {
            if (s.Length == 0) return;
            text.Append(s);
            if (onDelta is not null) await onDelta(index, s);
        }
        await foreach (var token in h.Tokens.ReadAllAsync(CancellationToken.None))
        {
            count++;
            if (token == m.Tokenizer.EotToken) { eot = true; break; }   // the scheduler may not have marked it finished yet
            await Show(matcher.Feed(decoder.Add(token)));
            if (matcher.Stopped) { stop.Cancel(); break; }
        }
        if (!matcher.Stopped) await Show(matcher.Feed(decoder.Flush()) + matcher.Flush());
        // Drain so the scheduler's writes complete (the sequence was cancelled if we stopped early).
        while (h.Tokens.TryRead(out _)) { }
        string reason = matcher.Stopped || eot ? "stop"
            : h.FinishReason switch
            {
                "stop" => "stop",
                "cancelled" when timeout.IsCancellationRequested => "length",
                "cancelled" => "cancelled",
                "error" => throw h.Error ?? new InvalidOperationException("generation failed"),
                _ => "length",
            };
        return new ChoiceResult(index, text.ToString(), reason, count);
    }
}
