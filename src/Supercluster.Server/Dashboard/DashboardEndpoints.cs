using System.Reflection;
using System.Text.Json.Nodes;
using Supercluster.Server.OpenAi;

namespace Supercluster.Server.Dashboard;

/// <summary>
/// The dashboard: static files embedded in this assembly (page, script, vendored uPlot: works offline) and a small
/// JSON API over the runs directory: <c>/api/info</c>, <c>/api/runs</c>, <c>/api/runs/{name}</c>, <c>/api/runs/{name}/metrics?offset=N</c>.
/// </summary>
public static class DashboardEndpoints
{
    static readonly Assembly Asm = typeof(DashboardEndpoints).Assembly;

    public static void Map(WebApplication app, ServerState s)
    {
        app.MapGet("/", ctx => Static(ctx, "index.html"));
        app.MapGet("/static/{*file}", (HttpContext ctx, string? file) => Static(ctx, file ?? ""));   // nullable: "/static/" → our 404, not an empty 400
        app.MapGet("/api/info", ctx => CompletionEndpoints.Json(ctx, new JsonObject
        {
            ["model"] = s.Model?.Name, ["context"] = s.Model?.Context, ["index"] = s.Index?.Count,
            // The runs directory's name only: absolute paths tell a visitor about the machine, and the page needs none.
            ["runs_dir"] = s.Runs is null ? null : Path.GetFileName(s.Runs.Root.TrimEnd('/')) is { Length: > 0 } n ? n : "/",
            ["api_key_required"] = s.ApiKeys.Count > 0,
        }));
        app.MapGet("/api/runs", ctx =>
        {
            var runs = new JsonArray();
            if (s.Runs is { } r)
                foreach (var d in r.RunDirs())
                {
                    var sum = r.SafeSummary(d);   // one malformed run is flagged, never fails the list
                    sum.Remove("config");
                    runs.Add(sum);
                }
            return CompletionEndpoints.Json(ctx, new JsonObject { ["runs"] = runs });
        });
        app.MapGet("/api/runs/{*name}", (HttpContext ctx, string? name) =>
        {
            name ??= "";
            var runs = s.Runs ?? throw new ApiException(404, "no runs directory: start with --runs DIR");
            bool metrics = name.EndsWith("/metrics");
            if (metrics) name = name[..^"/metrics".Length];
            var dir = runs.Find(name) ?? throw new ApiException(404, $"no run '{name}'");
            if (!metrics) return CompletionEndpoints.Json(ctx, runs.SafeSummary(dir));
            long offset = long.TryParse(ctx.Request.Query["offset"], out var o) && o >= 0 ? o : 0;
            var records = runs.ReadFrom(dir, offset, out var next);
            return CompletionEndpoints.Json(ctx, new JsonObject
            {
                ["offset"] = next, ["records"] = new JsonArray(records.Select(x => (JsonNode)x).ToArray()),
            });
        });
    }

    static async Task Static(HttpContext ctx, string file)
    {
        using var stream = file.Contains("..") || file.Contains('\\') ? null : Asm.GetManifestResourceStream("dashboard/" + file);
        if (stream is null) throw new ApiException(404, "no such file", code: "not_found");
        ctx.Response.ContentType = Path.GetExtension(file) switch
        {
            ".html" => "text/html; charset=utf-8",
            ".js" => "text/javascript; charset=utf-8",
            ".css" => "text/css; charset=utf-8",
            ".svg" => "image/svg+xml",
            _ => "application/octet-stream",
        };
        ctx.Response.Headers.CacheControl = "no-cache";
        await stream.CopyToAsync(ctx.Response.Body, ctx.RequestAborted);
    }
}
