using System.CommandLine;
using Supercluster.Server;

namespace Supercluster.Cli.Commands;

/// <summary><c>serve</c>: OpenAI-compatible API (batched generation), search and the dashboard from one process.</summary>
public static class ServeCommand
{
    public static Command Create()
    {
        var checkpoint = new Option<string>("--checkpoint") { Description = "Checkpoint directory, or a run directory (its newest checkpoint)", Required = true };
        var host = new Option<string>("--host") { Description = "Address to listen on", DefaultValueFactory = _ => "127.0.0.1" };
        var port = new Option<int>("--port") { Description = "Port (0 = any free one)", DefaultValueFactory = _ => 8080 };
        var keys = new Option<string?>("--api-key-file") { Description = "File with one API key per line; /v1 then needs 'Authorization: Bearer KEY'" };
        var index = new Option<string?>("--index") { Description = "Index from 'supercluster index': enables POST /v1/search" };
        var runs = new Option<string?>("--runs") { Description = "Directory of training runs for the dashboard" };
        var device = new Option<string>("--device") { Description = "auto, cpu or cuda[:N]", DefaultValueFactory = _ => "auto" };
        var maxBatch = new Option<int>("--max-batch") { Description = "Sequences decoded together per step", DefaultValueFactory = _ => 32 };
        var maxQueue = new Option<int>("--max-queue") { Description = "Sequences waiting for a slot before requests get 429", DefaultValueFactory = _ => 64 };
        var threads = new Option<int>("--threads") { Description = "CPU threads for libtorch ops (0 = libtorch's default); 1 can be faster on a busy machine", DefaultValueFactory = _ => 0 };
        var name = new Option<string?>("--model-name") { Description = "Model id in /v1/models (default: from the checkpoint path)" };
        var adapter = new Option<string[]>("--adapter") { Description = "LoRA adapter [NAME=]DIR served beside the base (repeatable); requests choose it by 'model'", AllowMultipleArgumentsPerToken = false };
        var (allowedHosts, allowedOrigins, perClient) = DashboardCommand.SecurityOptions();
        var prefillChunk = new Option<int>("--prefill-chunk") { Description = "Prompt tokens prefilled per step between decode steps, so long prompts do not stall running streams (0 = whole prompts)", DefaultValueFactory = _ => 256 };
        var separatePrefill = new Option<bool>("--separate-prefill") { Description = "Prefill prompt chunks in a forward of their own before each decode step, instead of inside it (one mixed forward, the default)" };
        var prefixCacheMb = new Option<int>("--prefix-cache-mb") { Description = "Memory for the KV blocks of prompt prefixes shared by requests, e.g. a system prompt (0 = no prefix caching)", DefaultValueFactory = _ => 256 };
        var stepDelay = new Option<int>("--step-delay-ms") { Description = "Pause after each decode step (demos, drain tests)", Hidden = true };
        var profile = new Option<int>("--profile") { Description = "Print the scheduler's time per phase of a decode step (forward, KV writes, sampling, …) to stderr every N seconds (0 = off)", DefaultValueFactory = _ => 0 };
        var shutdownTimeout = new Option<int>("--shutdown-timeout") { Description = "Seconds SIGTERM/Ctrl+C waits for running requests to finish (new ones get 503) before stopping", DefaultValueFactory = _ => 30 };

        var cmd = new Command("serve", "Serve a model: OpenAI-compatible API, search, metrics and the dashboard");
        HelpExamples.Add(cmd, "serve --checkpoint runs/sotu --runs runs --port 8080", "serve --checkpoint runs/sotu --index sotu.index --api-key-file keys.txt --host 0.0.0.0",
            "serve --checkpoint runs/demo --adapter ads=runs/ads-lora --port 8080");
        foreach (var o in new Option[] { checkpoint, host, port, keys, index, runs, device, maxBatch, maxQueue, threads, name, adapter, allowedHosts, allowedOrigins, perClient, prefillChunk, separatePrefill, prefixCacheMb, shutdownTimeout, profile, stepDelay }) cmd.Options.Add(o);
        cmd.SetAction(async (parse, ct) =>
        {
            CliRunner.LoadTorch(parse);
            if (parse.GetValue(threads) is > 0 and var n) TorchSharp.torch.set_num_threads(n);
            var options = new ServerOptions
            {
                Checkpoint = parse.GetValue(checkpoint), Host = parse.GetValue(host)!, Port = parse.GetValue(port), ApiKeyFile = parse.GetValue(keys),
                Index = parse.GetValue(index), RunsDir = parse.GetValue(runs), Device = parse.GetValue(device)!,
                MaxBatch = parse.GetValue(maxBatch), MaxQueue = parse.GetValue(maxQueue), ModelName = parse.GetValue(name),
                AllowedHosts = parse.GetValue(allowedHosts) ?? [], AllowedOrigins = parse.GetValue(allowedOrigins) ?? [],
                MaxConnectionsPerClient = parse.GetValue(perClient), Adapters = parse.GetValue(adapter) ?? [],
                PrefillChunk = parse.GetValue(prefillChunk), MixedPrefill = !parse.GetValue(separatePrefill), PrefixCacheBytes = (long)parse.GetValue(prefixCacheMb) << 20,
                ShutdownTimeout = TimeSpan.FromSeconds(parse.GetValue(shutdownTimeout)), StepDelay = TimeSpan.FromMilliseconds(Math.Max(0, parse.GetValue(stepDelay))),
                ProfileEvery = parse.GetValue(profile) > 0 ? TimeSpan.FromSeconds(parse.GetValue(profile)) : null,
            };
            if (parse.GetValue(profile) < 0) throw new BadInputException($"--profile {parse.GetValue(profile)}: expected ≥ 0 seconds (0 = off)");
            if (options.MaxBatch < 1 || options.MaxQueue < 0) throw new BadInputException("--max-batch must be ≥ 1 and --max-queue ≥ 0");
            if (options.PrefillChunk < 0) throw new BadInputException($"--prefill-chunk {options.PrefillChunk}: expected ≥ 0 tokens (0 = whole prompts)");
            if (parse.GetValue(prefixCacheMb) < 0) throw new BadInputException($"--prefix-cache-mb {parse.GetValue(prefixCacheMb)}: expected ≥ 0 (0 = off)");
            if (options.ShutdownTimeout < TimeSpan.Zero) throw new BadInputException($"--shutdown-timeout {parse.GetValue(shutdownTimeout)}: expected ≥ 0 seconds");
            // SIGTERM/Ctrl+C: drain (running streams finish, new requests get 503) up to --shutdown-timeout, exit 0.
            // A second signal stops at once.
            using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
            void OnSignal(System.Runtime.InteropServices.PosixSignalContext c)
            {
                if (stop.IsCancellationRequested) return;       // second signal: the default (terminate)
                c.Cancel = true;
                stop.Cancel();
            }
            using var term = System.Runtime.InteropServices.PosixSignalRegistration.Create(System.Runtime.InteropServices.PosixSignal.SIGTERM, OnSignal);
            using var intr = System.Runtime.InteropServices.PosixSignalRegistration.Create(System.Runtime.InteropServices.PosixSignal.SIGINT, OnSignal);
            return await DashboardCommand.RunUntilStopped(options, stop.Token);
        });
        return cmd;
    }
}
