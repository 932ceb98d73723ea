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

    /// <summary>One prompt's choices in the scheduler, with the sources that stop them (client gone, time limit, stop string).</summary>
    public sealed class Run(GenerationHandle[] handles, CancellationTokenSource[] stops, CancellationTokenSource timeout, CancellationTokenSource linked) : IDisposable
    {
        public GenerationHandle[] Handles { get; } = handles;
        public CancellationTokenSource[] Stops { get; } = stops;
        public CancellationTokenSource Timeout { get; } = timeout;

        public void Dispose()
        {
            foreach (var s in Stops) { s.Cancel(); s.Dispose(); }   // cancelling frees the slots of unfinished choices
            linked.Dispose();
            Timeout.Dispose();
        }
    }

    /// <summary>
    /// Submits all choices at once (so they share decode steps); throws <see cref="SchedulerBusyException"/> (429) at
    /// once when the queue is full. Cancelling <paramref name="ct"/> (client gone) removes the sequences from the batch.
    /// </summary>
    public static Run Submit(LoadedModel m, int[] prompt, GenerationParams p, TimeSpan timeLimit, CancellationToken ct)
    {
        long baseSeed = p.Seed ?? Random.Shared.NextInt64();
        var timeout = new CancellationTokenSource(timeLimit);
        var linked = CancellationTokenSource.CreateLinkedTokenSource(ct, timeout.Token);
        var stops = Enumerable.Range(0, p.N).Select(_ => CancellationTokenSource.CreateLinkedTokenSource(linked.Token)).ToArray();
        var run = new Run([], stops, timeout, linked);
        try
        {
            var choices = stops.Select((stop, i) => (new SamplingOptions
            {
                MaxNewTokens = p.MaxTokens, Temperature = p.Temperature, TopP = p.TopP, Seed = baseSeed + i,
                StopToken = m.Tokenizer.EotToken,
            }, stop.Token)).ToArray();
            var handles = m.Scheduler.SubmitGroup(prompt, choices);   // admitted together: seeded requests repeat exactly
            return new Run(handles, stops, timeout, linked);
        }
        catch
        {
            run.Dispose();
            throw;
        }
    }

    /// <summary>Awaits a run's choices; <paramref name="onDelta"/> (for streams) receives (choice, text) as text becomes safe to show.</summary>
    public static async Task<ChoiceResult[]> CollectAsync(Run run, LoadedModel m, GenerationParams p, Func<int, string, Task>? onDelta)
    {
        try
        {
            var tasks = run.Handles.Select((h, i) => Collect(i, h, run.Stops[i], m, p, onDelta, run.Timeout)).ToArray();
            return await Task.WhenAll(tasks);
        }
        finally { run.Dispose(); }
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
