using Supercluster.Search;
using Supercluster.Server.Dashboard;
using Supercluster.Server.OpenAi;

namespace Supercluster.Server;

/// <summary>What the endpoints share: options, the model (if any), the index (if any), runs, metrics, API keys.</summary>
public sealed class ServerState(ServerOptions options, LoadedModel? model, SearchIndex? index, RunScanner? runs, IReadOnlySet<string> apiKeys)
{
    int _inFlight;

    public ServerOptions Options { get; } = options;
    public LoadedModel? Model { get; } = model;
    public SearchIndex? Index { get; } = index;
    /// <summary>The model as the index's query embedder (set with the index).</summary>
    public EmbeddingModel? Embedding { get; init; }
    public RunScanner? Runs { get; } = runs;
    public IReadOnlySet<string> ApiKeys { get; } = apiKeys;
    /// <summary>Per-key requests per minute from the key file (keys without a limit pass).</summary>
    public Security.KeyRateLimiter RateLimits { get; init; } = new(new Dictionary<string, int>());
    /// <summary>Set on SIGTERM/Ctrl+C: running requests finish, new API requests get 503.</summary>
    public bool Draining { get; set; }
    /// <summary>Generation/embedding requests in flight.</summary>
    public int InFlight => Volatile.Read(ref _inFlight);
    public ServerMetrics Metrics { get; } = new();
    /// <summary>The server log (stderr by default): details of internal errors go here, never to the client.</summary>
    public Action<string> Log { get; init; } = Console.Error.WriteLine;

    /// <summary>The base model with LoRA adapters merged in (<c>serve --adapter</c>), each served under its own name.</summary>
    public IReadOnlyList<LoadedModel> Adapters { get; init; } = [];

    /// <summary>The model a request's <c>model</c> field names: an adapter by its name, else the base (404 for an unknown name).</summary>
    public LoadedModel ModelFor(RequestReader r, LoadedModel baseModel)
    {
        if (r.String("model") is { } name && Adapters.FirstOrDefault(a => a.Aliases.Contains(name)) is { } adapter) return adapter;
        CompletionEndpoints.CheckModel(r, baseModel);
        return baseModel;
    }

    public LoadedModel RequireModel() =>
        Model ?? throw new ApiException(503, "no model loaded: start the server with --checkpoint PATH", "server_error", code: "no_model");

    /// <summary>Counts a generation/embedding request in; false (→ 429) when the limit is reached.</summary>
    public bool TryEnter()
    {
        int n = Interlocked.Increment(ref _inFlight);
        Metrics.InFlight(n);
        if (n <= Options.MaxConcurrentRequests) return true;
        Leave();
        return false;
    }

    public void Leave() => Metrics.InFlight(Interlocked.Decrement(ref _inFlight));
}
