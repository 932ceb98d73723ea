using System.Diagnostics;
using System.Net;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Prometheus;
using Supercluster.Inference;
using Supercluster.Search;
using Supercluster.Server.Dashboard;
using Supercluster.Server.OpenAi;
using Supercluster.Server.Security;

namespace Supercluster.Server;

/// <summary>
/// One Kestrel process serving the OpenAI-compatible API (when a checkpoint is given), search (when an index is
/// given) and the dashboard. <see cref="StartAsync"/> loads everything, binds, and returns the running server.
/// </summary>
public sealed class SuperclusterServer : IAsyncDisposable
{
    readonly WebApplication _app;
    readonly Timer? _trim;

    SuperclusterServer(WebApplication app, ServerState state, string url)
    {
        _app = app; State = state; Url = url;
        // Freed activations go back to the kernel between bursts instead of holding the peak (see NativeMemory).
        if (state.Model is not null) _trim = new Timer(_ => NativeMemory.Trim(), null, TimeSpan.FromSeconds(5), TimeSpan.FromSeconds(5));
    }

    public ServerState State { get; }
    /// <summary>Base address, e.g. http://127.0.0.1:8080.</summary>
    public string Url { get; }

    public static async Task<SuperclusterServer> StartAsync(ServerOptions o, Action<string>? log = null)
    {
        if (!IPAddress.TryParse(o.Host == "localhost" ? "127.0.0.1" : o.Host, out var ip))
            throw new BadInputException($"--host {o.Host}: expected an IP address such as 127.0.0.1");
        if (o.Port is < 0 or > 65535) throw new BadInputException($"--port {o.Port}: expected 0–65535");
        (HashSet<string> keys, Dictionary<string, int> perMinute) = o.ApiKeyFile is null ? (new(), new()) : KeyRateLimiter.ReadKeyFile(o.ApiKeyFile);
        LoadedModel? model = null;
        if (o.Checkpoint is not null)
        {
            NativeMemory.LimitArenas(2);
            model = LoadedModel.Load(o);
            log?.Invoke($"model {model.Name}: {model.Model.Config.ParameterCount():N0} parameters, context {model.Context}, tokenizer {model.Tokenizer.Name}");
        }
        var adapters = new List<LoadedModel>();
        foreach (var spec in o.Adapters)
        {
            if (model is null) throw new BadInputException("--adapter needs --checkpoint (the base model)");
            var a = LoadedModel.LoadAdapter(o, spec);
            if (adapters.Prepend(model).Any(m => m.Aliases.Contains(a.Name))) throw new BadInputException($"--adapter {spec}: the name '{a.Name}' is already served; name it with --adapter NAME=DIR");
            adapters.Add(a);
            log?.Invoke($"adapter {a.Name}: {a.Dir} merged into {model.Name}");
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
        if (o.MaxConnectionsPerClient < 0) throw new BadInputException($"--max-connections-per-client {o.MaxConnectionsPerClient}: expected ≥ 0 (0 = no limit)");
        var state = new ServerState(o, model, index, o.RunsDir is null ? null : new RunScanner(o.RunsDir), keys)
        {
            Embedding = embedding,
            RateLimits = new KeyRateLimiter(perMinute),
            Adapters = adapters,
            Log = log ?? (m => Console.Error.WriteLine($"[serve] {m}")),
        };
        var connections = new ClientConnectionLimit(o.MaxConnectionsPerClient);
        if (model is not null) state.Metrics.Attach(model.Scheduler);

        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { ContentRootPath = AppContext.BaseDirectory });
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.Listen(ip, o.Port, l => l.Use(connections.Middleware));
            k.Limits.MaxRequestBodySize = o.MaxRequestBytes;
            k.Limits.RequestHeadersTimeout = TimeSpan.FromSeconds(15);
            k.Limits.MaxRequestHeadersTotalSize = 32 * 1024;
            k.Limits.KeepAliveTimeout = TimeSpan.FromSeconds(60);
            k.Limits.MaxConcurrentConnections = 1024;
        });
        var app = builder.Build();
        app.UseRouting();   // the guard decides on the matched endpoint (routing ignores case; a path prefix would not)
        var policy = new OriginPolicy(o);
        app.Use((ctx, next) => Guard(ctx, next, state, policy));
        Map(app, state);
        await app.StartAsync();
        var url = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        url = url.Replace("[::]", "127.0.0.1").Replace("0.0.0.0", "127.0.0.1").TrimEnd('/');
        return new SuperclusterServer(app, state, url);
    }

    static void Map(WebApplication app, ServerState s)
    {
        app.MapPost("/v1/completions", ctx => CompletionEndpoints.Completions(ctx, s));
        app.MapPost("/v1/chat/completions", ctx => CompletionEndpoints.Chat(ctx, s));
        app.MapPost("/v1/embeddings", ctx => EmbeddingEndpoints.Embeddings(ctx, s));
        app.MapPost("/tokenize", ctx => TokenizeEndpoints.Tokenize(ctx, s));
        app.MapPost("/detokenize", ctx => TokenizeEndpoints.Detokenize(ctx, s));
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
        // "{*path}", not MapFallback's "{*path:nonfile}": a path with a dot (/v1/x.json) gets the same JSON 404.
        app.MapFallback("{*path}", ctx => throw new ApiException(404, $"no such endpoint: {ctx.Request.Method} {Clip(ctx.Request.Path.Value ?? "")}", code: "not_found"));
    }

    /// <summary>
    /// Before any endpoint: Host/Origin policy, API keys (on /v1 and the dashboard API), then for JSON POSTs the whole
    /// body (content type, UTF-8, JSON) and only then an in-flight slot, so clients that send half a body hold none.
    /// Answers every failure in OpenAI's shape; an unexpected exception becomes a generic 500 with a request id (the
    /// details go to the server log, never to the client); never lets an exception crash the server.
    /// </summary>
    static async Task Guard(HttpContext ctx, Func<Task> next, ServerState s, OriginPolicy policy)
    {
        var started = Stopwatch.GetTimestamp();
        var path = ctx.Request.Path.Value ?? "";
        // The route template, not the request path: "/V1/completions" routes to "/v1/completions" and is guarded as such.
        var route = (ctx.GetEndpoint() as RouteEndpoint)?.RoutePattern.RawText;
        bool matched = route is not null && !route.StartsWith('{');   // the fallback's template is "{*path:nonfile}"
        bool api = matched ? route!.StartsWith("/v1/") || route is "/tokenize" or "/detokenize" : path.StartsWith("/v1/", StringComparison.OrdinalIgnoreCase);
        bool dashboardApi = matched ? route!.StartsWith("/api/") : path.StartsWith("/api/", StringComparison.OrdinalIgnoreCase);
        bool heavy = matched && api && HttpMethods.IsPost(ctx.Request.Method);
        bool entered = false;
        var requestId = "req-" + Guid.NewGuid().ToString("N")[..20];
        ctx.Response.Headers["X-Request-Id"] = requestId;
        try
        {
            policy.Check(ctx.Request);
            if ((api || dashboardApi) && s.ApiKeys.Count > 0)
            {
                var auth = ctx.Request.Headers.Authorization.ToString();
                if (!auth.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase))
                    throw new ApiException(401, "missing API key: send 'Authorization: Bearer KEY'", code: "invalid_api_key");
                var key = auth[7..].Trim();
                if (!s.ApiKeys.Contains(key)) throw new ApiException(401, "incorrect API key provided", code: "invalid_api_key");
                if (api && !s.RateLimits.TryAcquire(key, out var wait))
                {
                    int seconds = Math.Max(1, (int)Math.Ceiling(wait.TotalSeconds));
                    ctx.Items[RetryAfterKey] = seconds.ToString(System.Globalization.CultureInfo.InvariantCulture);
                    throw new ApiException(429, $"rate limit reached for this API key: {s.RateLimits.LimitOf(key)} requests per minute (--api-key-file); retry in {seconds} s",
                        "requests", code: "rate_limit_exceeded");
                }
            }
            if (api && s.Draining)
                throw new ApiException(503, "the server is shutting down; retry on another replica or after it restarts", "server_error", code: "server_shutting_down");
            if (heavy)
            {
                ctx.Items[RequestReader.ParsedBodyKey] = await RequestReader.ParseBodyAsync(ctx.Request, ctx.RequestAborted);
                if (!s.TryEnter()) throw new ApiException(429, $"too many concurrent requests (limit {s.Options.MaxConcurrentRequests}); retry later", "requests", code: "rate_limit_exceeded");
                entered = true;
            }
            await next();
            // A status the framework set without a body (405 from routing, 400 from parameter binding): say it in OpenAI's shape.
            if (!ctx.Response.HasStarted && ctx.Response.StatusCode >= 400)
                throw new ApiException(ctx.Response.StatusCode, $"{ctx.Request.Method} {Clip(path)}: {Microsoft.AspNetCore.WebUtilities.ReasonPhrases.GetReasonPhrase(ctx.Response.StatusCode)}",
                    code: ctx.Response.StatusCode == 405 ? "method_not_allowed" : null);
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
                _ => null,
            };
            if (err is null)
            {
                s.Log($"error {requestId} {ctx.Request.Method} {path}: {e}");
                err = new ApiException(500, $"internal error (request id {requestId}); the details are in the server log", "server_error", code: "internal_error");
            }
            await WriteError(ctx, err, requestId);
        }
        finally
        {
            if (entered) s.Leave();
            if (ctx.Items.Remove(RequestReader.ParsedBodyKey, out var unread)) (unread as IDisposable)?.Dispose();
            if (api || path == "/health")
                s.Metrics.Request(api ? (matched ? route! : "other") : "/health", ctx.Response.StatusCode, Stopwatch.GetElapsedTime(started));
        }
    }

    const string RetryAfterKey = "supercluster.retry-after";

    static string Clip(string s) => s.Length > 100 ? s[..100] + "…" : s;

    static async Task WriteError(HttpContext ctx, ApiException err, string requestId)
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
            ctx.Response.Clear();   // drops the headers too
            ctx.Response.Headers["X-Request-Id"] = requestId;
            if (err.Status == 429) ctx.Response.Headers.RetryAfter = ctx.Items.TryGetValue(RetryAfterKey, out var after) ? (string)after! : "1";
            await CompletionEndpoints.Json(ctx, err.ToJson(), err.Status);
        }
        catch (Exception) { /* the client is gone */ }
    }

    public Task WaitForShutdownAsync(CancellationToken ct = default) => _app.WaitForShutdownAsync(ct);

    /// <summary>
    /// Graceful shutdown, first half: new API requests get 503 while running ones (streams included) finish, for at
    /// most <paramref name="timeout"/>. Returns whether everything finished; <see cref="DisposeAsync"/> then stops.
    /// </summary>
    public async Task<bool> DrainAsync(TimeSpan timeout)
    {
        State.Draining = true;
        var until = Stopwatch.GetTimestamp() + (long)(timeout.TotalSeconds * Stopwatch.Frequency);
        while (State.InFlight > 0 && Stopwatch.GetTimestamp() < until) await Task.Delay(50);
        return State.InFlight == 0;
    }

    public async ValueTask DisposeAsync()
    {
        if (_trim is not null) await _trim.DisposeAsync();
        await _app.StopAsync();
        await _app.DisposeAsync();
        State.Model?.Dispose();
        foreach (var a in State.Adapters) a.Dispose();
        State.Index?.Dispose();
    }
}
