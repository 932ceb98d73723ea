namespace Supercluster.Server;

/// <summary>What <see cref="SuperclusterServer"/> serves and its limits.</summary>
public sealed record ServerOptions
{
    /// <summary>Checkpoint (or run) directory; null = dashboard only (no /v1 generation endpoints).</summary>
    public string? Checkpoint { get; init; }
    /// <summary>Index file from <c>supercluster index</c>; enables <c>POST /v1/search</c>.</summary>
    public string? Index { get; init; }
    /// <summary>Directory whose subdirectories are training runs (dashboard); null = none.</summary>
    public string? RunsDir { get; init; }
    public string Host { get; init; } = "127.0.0.1";
    /// <summary>0 = any free port (tests).</summary>
    public int Port { get; init; } = 8080;
    /// <summary>File with one API key per line; when set, /v1 needs <c>Authorization: Bearer KEY</c>.</summary>
    public string? ApiKeyFile { get; init; }
    public string Device { get; init; } = "auto";
    /// <summary>Sequences decoded together in one batched forward.</summary>
    public int MaxBatch { get; init; } = 32;
    /// <summary>Sequences waiting for a batch slot before new ones get 429.</summary>
    public int MaxQueue { get; init; } = 64;
    /// <summary>Prompt tokens prefilled per scheduler iteration, between decode steps (0 = whole prompts at once).</summary>
    public int PrefillChunk { get; init; } = 256;
    /// <summary>Prompt chunks run inside the decode step's forward while sequences decode (false: a prefill forward of their own first).</summary>
    public bool MixedPrefill { get; init; } = true;
    /// <summary>Memory for cached prompt blocks shared by requests with a common prefix (0 = no prefix caching).</summary>
    public long PrefixCacheBytes { get; init; } = 256L << 20;
    /// <summary>Pause after each decode step (demos and tests of draining: a tiny model as slow as a big one). Default none.</summary>
    public TimeSpan StepDelay { get; init; }
    /// <summary>Print the scheduler's time per phase of a decode step to stderr this often (<c>serve --profile</c>); null = off.</summary>
    public TimeSpan? ProfileEvery { get; init; }
    /// <summary>How long a SIGTERM/Ctrl+C waits for running requests to finish (new ones get 503) before stopping.</summary>
    public TimeSpan ShutdownTimeout { get; init; } = TimeSpan.FromSeconds(30);
    /// <summary>Generation/embedding requests in flight before new ones get 429.</summary>
    public int MaxConcurrentRequests { get; init; } = 96;
    public long MaxRequestBytes { get; init; } = 1 << 20;
    /// <summary>A generation stops after this long (finish_reason "length").</summary>
    public TimeSpan GenerationTimeLimit { get; init; } = TimeSpan.FromSeconds(120);
    /// <summary>Upper bound for max_tokens (also limited by the context: prompt + max_tokens ≤ context).</summary>
    public int MaxTokensLimit { get; init; } = 4096;
    public int MaxChoices { get; init; } = 8;
    /// <summary>Name in /v1/models (default: derived from the checkpoint path).</summary>
    public string? ModelName { get; init; }
    /// <summary>LoRA adapters served beside the base, each <c>[NAME=]DIR</c> (<c>serve --adapter</c>, repeatable).</summary>
    public IReadOnlyList<string> Adapters { get; init; } = [];
    /// <summary>
    /// Host names (besides IP literals and localhost) accepted in the Host header; "*" accepts any. Guards against DNS
    /// rebinding: a page on evil.example whose name resolves to 127.0.0.1 sends "Host: evil.example".
    /// </summary>
    public IReadOnlyList<string> AllowedHosts { get; init; } = [];
    /// <summary>Origins (scheme://host[:port]) besides the server's own that browsers may call it from; "*" accepts any.</summary>
    public IReadOnlyList<string> AllowedOrigins { get; init; } = [];
    /// <summary>Open connections per client IP address; more are answered 429 and closed (0 = no limit, e.g. behind a proxy).</summary>
    public int MaxConnectionsPerClient { get; init; } = 64;
}
