using System.CommandLine;
using Supercluster.Server;

namespace Supercluster.Cli.Commands;

/// <summary><c>dashboard</c>: the runs dashboard without a model (no libtorch needed).</summary>
public static class DashboardCommand
{
    public static Command Create()
    {
        var runs = new Option<string>("--runs") { Description = "Directory of training runs (each with config.json, metrics.jsonl, checkpoints/)", Required = true };
        var host = new Option<string>("--host") { DefaultValueFactory = _ => "127.0.0.1" };
        var port = new Option<int>("--port") { DefaultValueFactory = _ => 8080 };
        var keys = new Option<string?>("--api-key-file") { Description = "File with one API key per line; /api then needs 'Authorization: Bearer KEY'" };
        var (allowedHosts, allowedOrigins, perClient) = SecurityOptions();
        var cmd = new Command("dashboard", "Web dashboard of training runs: status, live loss/lr/throughput charts, checkpoints");
        HelpExamples.Add(cmd, "dashboard --runs runs --port 8080");
        foreach (var o in new Option[] { runs, host, port, keys, allowedHosts, allowedOrigins, perClient }) cmd.Options.Add(o);
        cmd.SetAction(async (parse, ct) =>
        {
            var dir = parse.GetValue(runs)!;
            if (!Directory.Exists(dir)) throw new BadInputException($"--runs {dir} does not exist");
            return await RunUntilStopped(new ServerOptions
            {
                RunsDir = dir, Host = parse.GetValue(host)!, Port = parse.GetValue(port), ApiKeyFile = parse.GetValue(keys),
                AllowedHosts = parse.GetValue(allowedHosts) ?? [], AllowedOrigins = parse.GetValue(allowedOrigins) ?? [],
                MaxConnectionsPerClient = parse.GetValue(perClient),
            }, ct);
        });
        return cmd;
    }

    /// <summary>--allowed-hosts, --allowed-origins, --max-connections-per-client: shared by serve and dashboard.</summary>
    internal static (Option<string[]> Hosts, Option<string[]> Origins, Option<int> PerClient) SecurityOptions() => (
        new Option<string[]>("--allowed-hosts") { Description = "Host names accepted in the Host header besides IP addresses and localhost ('*' = any); guards against DNS rebinding", AllowMultipleArgumentsPerToken = true },
        new Option<string[]>("--allowed-origins") { Description = "Origins (https://site:port) whose pages may call this server besides its own ('*' = any)", AllowMultipleArgumentsPerToken = true },
        new Option<int>("--max-connections-per-client") { Description = "Open connections per client IP before more get 429 (0 = no limit, e.g. behind a proxy)", DefaultValueFactory = _ => 64 });

    /// <summary>Starts the server, prints its address, and runs until Ctrl+C.</summary>
    internal static async Task<int> RunUntilStopped(ServerOptions options, CancellationToken ct)
    {
        SuperclusterServer server;
        try { server = await SuperclusterServer.StartAsync(options, m => Console.Error.WriteLine($"[serve] {m}")); }
        catch (IOException e) { throw new BadInputException($"cannot listen on {options.Host}:{options.Port}: {e.Message}"); }
        await using (server)
        {
            Console.Error.WriteLine($"[serve] listening on {server.Url} (dashboard at {server.Url}/); Ctrl+C stops");
            try { await Task.Delay(Timeout.Infinite, ct); } catch (OperationCanceledException) { }
            Console.Error.WriteLine($"[serve] stopping: {server.State.InFlight} requests in flight finish first (at most {options.ShutdownTimeout.TotalSeconds:0} s), new ones get 503");
            if (!await server.DrainAsync(options.ShutdownTimeout)) Console.Error.WriteLine($"[serve] {server.State.InFlight} requests still running after {options.ShutdownTimeout.TotalSeconds:0} s: stopping them");
        }
        return 0;
    }
}
