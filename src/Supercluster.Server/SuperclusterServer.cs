using System.Diagnostics;
using System.Net;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Prometheus;
using Supercluster.Inference;
using Supercluster.Search;
using Supercluster.Server.Dashboard;
using Supercluster.Server.OpenAi;

namespace Supercluster.Server;

/// <summary>
/// One Kestrel process serving the OpenAI-compatible API (when a checkpoint is given), search (when an index is
/// given) and the dashboard. <see cref="StartAsync"/> loads everything, binds, and returns the running server.
/// </summary>
public sealed class SuperclusterServer : IAsyncDisposable
{
    readonly WebApplication _app;

    SuperclusterServer(WebApplication app, ServerState state, string url)
    {
        _app = app; State = state; Url = url;
    }

    public ServerState State { get; }
    /// <summary>Base address, e.g. http://127.0.0.1:8080.</summary>
    public string Url { get; }

    public static async Task<SuperclusterServer> StartAsync(ServerOptions o, Action<string>? log = null)
    {
        if (!IPAddress.TryParse(o.Host == "localhost" ? "127.0.0.1" : o.Host, out var ip))
            throw new BadInputException($"--host {o.Host}: expected an IP address such as 127.0.0.1");
        if (o.Port is < 0 or > 65535) throw new BadInputException($"--port {o.Port}: expected 0–65535");
        var keys = ReadKeys(o.ApiKeyFile);
        LoadedModel? model = null;
        if (o.Checkpoint is not null)
        {
            model = LoadedModel.Load(o);
            log?.Invoke($"model {model.Name}: {model.Model.Config.ParameterCount():N0} parameters, context {model.Context}, tokenizer {model.Tokenizer.Name}");
        }
        SearchIndex? index = null;
        EmbeddingModel? embedding = null;
        if (o.Index is not null)
        {
            if (model is null) throw new BadInputException("--index needs --checkpoint (queries are embedded with the model)");
            index = SearchIndex.Open(o.Index);
            embedding = IndexBuilder.Model(model.Embedder, model.Tokenizer, model.Dir);
            index.CheckModel(embedding);
            log?.Invoke($"index {o.Index}: {index.Count:N0} passages, fields {string.Join(", ", index.Manifest.Fields.Keys)}");
        }
        var state = new ServerState(o, model, index, o.RunsDir is null ? null : new RunScanner(o.RunsDir), keys) { Embedding = embedding };
        if (model is not null) state.Metrics.Attach(model.Scheduler);

        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { ContentRootPath = AppContext.BaseDirectory });
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.Listen(ip, o.Port);
            k.Limits.MaxRequestBodySize = o.MaxRequestBytes;
            k.Limits.RequestHeadersTimeout = TimeSpan.FromSeconds(15);
            k.Limits.MaxRequestHeadersTotalSize = 32 * 1024;
            k.Limits.KeepAliveTimeout = TimeSpan.FromSeconds(60);
            k.Limits.MaxConcurrentConnections = 1024;
        });
        var app = builder.Build();
        app.Use((ctx, next) => Guard(ctx, next, state));
        Map(app, state);
        await app.StartAsync();
        var url = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        url = url.Replace("[::]", "127.0.0.1").Replace("0.0.0.0", "127.0.0.1").TrimEnd('/');
        return new SuperclusterServer(app, state, url);
    }

    static IReadOnlySet<string> ReadKeys(string? file)
    {
        if (file is null) return new HashSet<string>();
        if (!File.Exists(file)) throw new BadInputException($"--api-key-file {file} does not exist");
        var keys = File.ReadAllLines(file).Select(l => l.Trim()).Where(l => l.Length > 0 && !l.StartsWith('#')).ToHashSet(StringComparer.Ordinal);
        if (keys.Count == 0) throw new BadInputException($"--api-key-file {file} holds no keys (one per line)");
        return keys;
    }

    static void Map(WebApplication app, ServerState s)
    {
        app.MapPost("/v1/completions", ctx => CompletionEndpoints.Completions(ctx, s));
        app.MapPost("/v1/chat/completions", ctx => CompletionEndpoints.Chat(ctx, s));
        app.MapPost("/v1/embeddings", ctx => EmbeddingEndpoints.Embeddings(ctx, s));
        Search.SearchEndpoints.Map(app, s);
        app.MapGet("/v1/models", ctx => EmbeddingEndpoints.Models(ctx, s));
        app.MapGet("/health", ctx => CompletionEndpoints.Json(ctx, new System.Text.Json.Nodes.JsonObject
        {
            ["status"] = "ok", ["model"] = s.Model?.Name, ["index_passages"] = s.Index?.Count,
            ["queue_depth"] = s.Model?.Scheduler.QueueDepth, ["active_sequences"] = s.Model?.Scheduler.Active,
        }));
        app.MapGet("/metrics", async ctx =>
        {
            ctx.Response.ContentType = "text/plain; version=0.0.4; charset=utf-8";
            await s.Metrics.Registry.CollectAndExportAsTextAsync(ctx.Response.Body, ctx.RequestAborted);
        });
        DashboardEndpoints.Map(app, s);
        app.MapFallback(ctx => throw new ApiException(404, $"no such endpoint: {ctx.Request.Method} {ctx.Request.Path}", code: "not_found"));
    }

    /// <summary>API keys, the concurrency limit, OpenAI-shaped errors, metrics; never lets an exception crash the server.</summary>
    static async Task Guard(HttpContext ctx, Func<Task> next, ServerState s)
    {
        var started = Stopwatch.GetTimestamp();
        var path = ctx.Request.Path.Value ?? "";
        bool api = path.StartsWith("/v1/");
        bool heavy = api && HttpMethods.IsPost(ctx.Request.Method);
        bool entered = false;
        try
        {
            if (api && s.ApiKeys.Count > 0)
            {
                var auth = ctx.Request.Headers.Authorization.ToString();
                if (!auth.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase))
                    throw new ApiException(401, "missing API key: send 'Authorization: Bearer KEY'", code: "invalid_api_key");
                if (!s.ApiKeys.Contains(auth[7..].Trim())) throw new ApiException(401, "incorrect API key provided", code: "invalid_api_key");
            }
            if (heavy)
            {
                if (!s.TryEnter()) throw new ApiException(429, $"too many concurrent requests (limit {s.Options.MaxConcurrentRequests}); retry later", "requests", code: "rate_limit_exceeded");
                entered = true;
            }
            await next();
        }
        catch (Exception e) when (e is OperationCanceledException && ctx.RequestAborted.IsCancellationRequested)
        {
            // Client went away: generation was cancelled through RequestAborted; nothing to answer.
        }
        catch (Exception e)
        {
            var err = e switch
            {
                ApiException a => a,
                SchedulerBusyException b => new ApiException(429, b.Message, "requests", code: "rate_limit_exceeded"),
                BadInputException b => ApiException.BadRequest(b.Message),
                BadHttpRequestException b when b.StatusCode == 413 => new ApiException(413, $"request body over the limit of {s.Options.MaxRequestBytes} bytes", code: "request_too_large"),
                BadHttpRequestException b => new ApiException(b.StatusCode, b.Message),
                _ => new ApiException(500, $"internal error: {e.GetType().Name}: {e.Message}", "server_error"),
            };
            await WriteError(ctx, err);
        }
        finally
        {
            if (entered) s.Leave();
            if (api || path == "/health")
            {
                var endpoint = api ? path : "/health";
                if (endpoint.Length > 40 || !KnownEndpoints.Contains(endpoint)) endpoint = "other";
                s.Metrics.Request(endpoint, ctx.Response.StatusCode, Stopwatch.GetElapsedTime(started));
            }
        }
    }

    static readonly HashSet<string> KnownEndpoints = ["/v1/completions", "/v1/chat/completions", "/v1/embeddings", "/v1/search", "/v1/models", "/health"];

    static async Task WriteError(HttpContext ctx, ApiException err)
    {
        try
        {
            if (ctx.Response.HasStarted)
            {
                // Mid-stream (SSE): the status is sent already; say it as an event and end the stream.
                if (ctx.Response.ContentType == "text/event-stream")
                    await ctx.Response.WriteAsync("data: " + err.ToJson().ToJsonString() + "\n\ndata: [DONE]\n\n");
                return;
            }
            ctx.Response.Clear();
            await CompletionEndpoints.Json(ctx, err.ToJson(), err.Status);
        }
        catch (Exception) { /* the client is gone */ }
    }

    public Task WaitForShutdownAsync(CancellationToken ct = default) => _app.WaitForShutdownAsync(ct);

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
        State.Model?.Dispose();
        State.Index?.Dispose();
    }
}
