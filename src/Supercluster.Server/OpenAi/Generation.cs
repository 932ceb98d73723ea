using Supercluster.Inference;

namespace Supercluster.Server.OpenAi;

/// <summary>The parsed sampling part of a completion/chat request.</summary>
public sealed record GenerationParams(int MaxTokens, double Temperature, double TopP, int N, IReadOnlyList<string> Stops, long? Seed, bool Stream)
{
    public double PresencePenalty { get; init; }
    public double FrequencyPenalty { get; init; }
    public IReadOnlyDictionary<int, float>? LogitBias { get; init; }
    /// <summary>Logprobs with this many alternatives per token; -1 = none.</summary>
    public int TopLogprobs { get; init; } = -1;
    /// <summary>Completions' echo: the prompt is part of the answer (and of its logprobs).</summary>
    public bool Echo { get; init; }
    /// <summary>stream_options.include_usage: a last chunk with the usage and no choices.</summary>
    public bool IncludeUsage { get; init; }
    /// <summary>Structured output or tool calls: the grammar every choice follows; null = free text.</summary>
    public Supercluster.Inference.Structured.GrammarNode? Grammar { get; init; }
}

/// <summary>A generated token's logprob and where its text starts in the choice's text.</summary>
public sealed record TokenInfo(TokenLogprob Logprob, int Offset);

/// <summary>One choice's result.</summary>
public sealed record ChoiceResult(int Index, string Text, string FinishReason, int CompletionTokens)
{
    /// <summary>The generated tokens' logprobs (the end-of-text token excluded), when asked for.</summary>
    public IReadOnlyList<TokenInfo>? Logprobs { get; init; }
    /// <summary>The prompt's tokens' logprobs (echo with logprobs): first token has none.</summary>
    public IReadOnlyList<TokenLogprob>? PromptLogprobs { get; init; }
}

/// <summary>
/// Where a stream's deltas go: <see cref="Write"/> puts one event (choice, text, logprobs of the tokens read since the
/// last one) into the response without sending it, <see cref="Flush"/> sends what was written. Tokens already waiting
/// for a stream are written one event each and flushed together: one socket write, same events.
/// </summary>
public sealed record DeltaSink(Func<int, string, IReadOnlyList<TokenInfo>, Task> Write, Func<Task> Flush);

/// <summary>Runs the choices of one request through the scheduler, turning tokens into text and applying stop sequences.</summary>
public static class Generation
{
    public static GenerationParams Parse(RequestReader r, int promptTokens, LoadedModel m, ServerOptions o, IEnumerable<string> extraStops)
    {
        int maxLimit = Math.Min(o.MaxTokensLimit, m.Context);
        // max_completion_tokens is OpenAI's newer name; when both are given it wins (as vLLM), and errors name the one used.
        var newer = r.Integer("max_completion_tokens", 0, int.MaxValue);
        var older = r.Integer("max_tokens", 0, int.MaxValue);
        string maxName = newer is not null ? "max_completion_tokens" : "max_tokens";
        var maxTokens = (int)(newer ?? older ?? Math.Min(16, m.Context - promptTokens));
        if (maxTokens > maxLimit)
            throw ApiException.BadRequest($"{maxName} = {maxTokens} is over the limit of {maxLimit}", maxName, "max_tokens_too_large");
        if (promptTokens + maxTokens > m.Context)
            throw ApiException.BadRequest($"this model's context is {m.Context} tokens; the prompt has {promptTokens} and {maxName} is {maxTokens} (together {promptTokens + maxTokens})",
                maxName, "context_length_exceeded");
        var temperature = r.Number("temperature", 0, 2) ?? 1.0;
        var topP = r.Number("top_p", 0, 1) ?? 1.0;
        if (topP == 0) topP = 1e-9; // OpenAI accepts 0 (= greedy-like); keep the top token
        var n = (int)(r.Integer("n", 1, o.MaxChoices) ?? 1);
        var stops = r.Strings("stop", 4) ?? [];
        var seed = r.Integer("seed", long.MinValue, long.MaxValue);
        var stream = r.Bool("stream") ?? false;
        bool includeUsage = false;
        if (r.Get("stream_options") is { } so)
        {
            if (so.ValueKind != System.Text.Json.JsonValueKind.Object)
                throw ApiException.BadRequest("'stream_options' must be an object", "stream_options", "invalid_type");
            if (!stream) throw ApiException.BadRequest("'stream_options' is only allowed when 'stream' is true", "stream_options");
            foreach (var f in so.EnumerateObject())
            {
                if (f.Name != "include_usage")
                    throw ApiException.BadRequest($"unsupported field 'stream_options.{f.Name}' (supported: include_usage)", "stream_options." + f.Name, "unsupported_parameter");
                if (f.Value.ValueKind is not (System.Text.Json.JsonValueKind.True or System.Text.Json.JsonValueKind.False))
                    throw ApiException.BadRequest("'stream_options.include_usage' must be a boolean", "stream_options.include_usage", "invalid_type");
                includeUsage = f.Value.GetBoolean();
            }
        }
        return new GenerationParams(maxTokens, temperature, topP, n, [.. stops, .. extraStops], seed, stream)
        {
            PresencePenalty = r.Number("presence_penalty", -2, 2) ?? 0,
            FrequencyPenalty = r.Number("frequency_penalty", -2, 2) ?? 0,
            LogitBias = LogitBias(r, m),
            IncludeUsage = includeUsage,
        };
    }

    /// <summary>logit_bias: {"token id": bias in [-100, 100]} (OpenAI's shape; keys are strings of token ids).</summary>
    static Dictionary<int, float>? LogitBias(RequestReader r, LoadedModel m)
    {
        if (r.Get("logit_bias") is not { } v) return null;
        if (v.ValueKind != System.Text.Json.JsonValueKind.Object)
            throw ApiException.BadRequest("'logit_bias' must be an object mapping token ids to biases in [-100, 100]", "logit_bias", "invalid_type");
        var bias = new Dictionary<int, float>();
        int vocab = Math.Min(m.Tokenizer.VocabSize, m.Model.Config.VocabSize);
        foreach (var p in v.EnumerateObject())
        {
            string key = p.Name.Length > 20 ? p.Name[..20] + "…" : p.Name;
            if (!int.TryParse(p.Name, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var id) || id >= vocab)
                throw ApiException.BadRequest($"'logit_bias' key '{key}' is not a token id (0 to {vocab - 1})", "logit_bias", "invalid_token");
            if (p.Value.ValueKind != System.Text.Json.JsonValueKind.Number || !p.Value.TryGetDouble(out var b))
                throw ApiException.BadRequest($"'logit_bias' value of token {id} must be a number", "logit_bias", "invalid_type");
            if (b < -100 || b > 100)
                throw ApiException.BadRequest($"'logit_bias' value of token {id} = {b} is out of range [-100, 100]", "logit_bias", "out_of_range");
            bias[id] = (float)b;
        }
        if (bias.Count > 1024) throw ApiException.BadRequest($"'logit_bias' has {bias.Count} entries, at most 1024 allowed", "logit_bias");
        return bias;
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
                PresencePenalty = p.PresencePenalty, FrequencyPenalty = p.FrequencyPenalty, LogitBias = p.LogitBias,
                TopLogprobs = p.TopLogprobs, PromptLogprobs = p.Echo && p.TopLogprobs >= 0,
                Constraint = p.Grammar is { } g ? () => new Supercluster.Inference.Structured.TokenConstraint(g, Supercluster.Inference.Structured.TokenTrie.For(m.Tokenizer), m.Tokenizer.EotToken) : null,
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

    /// <summary>
    /// Awaits a run's choices; <paramref name="onDelta"/> (for streams) receives each choice's text as it becomes safe to show.
    /// </summary>
    public static async Task<ChoiceResult[]> CollectAsync(Run run, LoadedModel m, GenerationParams p, DeltaSink? onDelta)
    {
        try
        {
            var tasks = run.Handles.Select((h, i) => Collect(i, h, run.Stops[i], m, p, onDelta, run.Timeout)).ToArray();
            return await Task.WhenAll(tasks);
        }
        finally { run.Dispose(); }
    }

    static async Task<ChoiceResult> Collect(int index, GenerationHandle h, CancellationTokenSource stop, LoadedModel m, GenerationParams p,
        DeltaSink? onDelta, CancellationTokenSource timeout)
    {
        var decoder = new TokenTextDecoder(m.Tokenizer);
        var matcher = new StopMatcher(p.Stops);
        var text = new System.Text.StringBuilder();
        int count = 0, decoded = 0;
        bool eot = false;
        List<TokenInfo>? all = p.TopLogprobs >= 0 ? [] : null;
        int shown = 0;   // entries of `all` already sent with a delta
        bool unsent = false;
        async Task Show(string s, bool last = false)
        {
            text.Append(s);
            if (onDelta is null || (s.Length == 0 && (!last || all is null || shown == all.Count))) return;
            var lps = all is null ? [] : all.GetRange(shown, all.Count - shown);
            shown = all?.Count ?? 0;
            await onDelta.Write(index, s, lps);
            unsent = true;
        }
        async Task Send()
        {
            if (unsent) await onDelta!.Flush();
            unsent = false;
        }
        // One event per token, as OpenAI and vLLM stream (a client reads each token's logprobs from its own chunk; putting
        // the tokens waiting for a stream into one event broke that, docs/serving.md); the waiting tokens' events are
        // sent with one flush.
        var reader = h.Tokens;
        bool ended = false;
        while (!ended && await reader.WaitToReadAsync(CancellationToken.None))
        {
            while (reader.TryRead(out var token))
            {
                count++;
                TokenLogprob? lp = null;
                if (all is not null && h.Picker is { } picker) picker.Logprobs.TryDequeue(out lp);   // queued before the token was sent
                if (token == m.Tokenizer.EotToken) { eot = true; ended = true; break; }   // the scheduler may not have marked it finished yet
                var piece = decoder.Add(token);
                if (lp is not null) all!.Add(new TokenInfo(lp, decoded));
                decoded += piece.Length;
                await Show(matcher.Feed(piece));
                if (matcher.Stopped) { stop.Cancel(); ended = true; break; }
            }
            await Send();
        }
        if (!matcher.Stopped) await Show(matcher.Feed(decoder.Flush()) + matcher.Flush(), last: true);
        else await Show("", last: true);
        await Send();
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
        // A token that starts past a stop sequence's cut shows at the end of the text.
        var logprobs = all?.Select(t => t with { Offset = Math.Min(t.Offset, text.Length) }).ToList();
        return new ChoiceResult(index, text.ToString(), reason, count) { Logprobs = logprobs, PromptLogprobs = h.Picker?.PromptLogprobs };
    }
}
