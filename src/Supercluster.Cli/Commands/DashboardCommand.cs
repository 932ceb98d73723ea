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
        var cmd = new Command("dashboard", "Web dashboard of training runs: status, live loss/lr/throughput charts, checkpoints");
        HelpExamples.Add(cmd, "dashboard --runs runs --port 8080");
        foreach (var o in new Option[] { runs, host, port }) cmd.Options.Add(o);
        cmd.SetAction(async (parse, ct) =>
        {
            var dir = parse.GetValue(runs)!;
            if (!Directory.Exists(dir)) throw new BadInputException($"--runs {dir} does not exist");
            return await RunUntilStopped(new ServerOptions { RunsDir = dir, Host = parse.GetValue(host)!, Port = parse.GetValue(port) }, ct);
        });
        return cmd;
    }

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
            Console.Error.WriteLine("[serve] stopping");
        }
        return 0;
    }
}
