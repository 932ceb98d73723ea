using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Supercluster.Checkpointing;
using Supercluster.Training;

namespace Supercluster.Distributed;

/// <summary>What <c>launch</c> runs and how it recovers.</summary>
public sealed record LaunchOptions(int Processes, int MaxRestarts, double HangTimeoutSeconds, IReadOnlyList<string> TrainArgs);

/// <summary>
/// Runs a training job under mpirun on this node and keeps it going: when a rank exits abnormally, is killed, or
/// stops making progress (heartbeats older than the hang timeout), every rank is stopped and the job restarts with
/// <c>--resume auto</c> from the newest complete checkpoint, up to <c>MaxRestarts</c> times. Each recovery is logged
/// and appended to <c>RUN_DIR/restarts.jsonl</c> (which rank, which step, how long until training again).
/// The supervisor holds the run directory's <see cref="RunLock"/> for the whole job. SIGTERM/SIGINT are forwarded to
/// every rank (they finish the step, checkpoint and exit 0) and end the job without a restart; mpirun runs in its own
/// session so a terminal's Ctrl+C reaches only the supervisor (mpirun would otherwise abort the ranks at once).
/// A rank that exits with status 2 (bad input) is not restarted: a restart cannot fix it.
/// </summary>
public sealed partial class JobSupervisor(LaunchOptions options, TextWriter log)
{
    [GeneratedRegex(@"process rank (\d+) with PID \d+ on node \S+ exited on signal (\d+)")] private static partial Regex SignalLine();
    [GeneratedRegex(@"process rank (\d+) with PID \d+ on node \S+ exited.*?status (\d+)", RegexOptions.Singleline)] private static partial Regex ExitLine();

    PosixSignal? _stopSignal;       // set by the first SIGTERM/SIGINT: forward, then no restart
    int _signals;
    Process? _mpirun;

    public int Run()
    {
        if (options.Processes < 1) throw new BadInputException($"--nproc {options.Processes}: expected ≥ 1");
        if (options.MaxRestarts < 0) throw new BadInputException($"--max-restarts {options.MaxRestarts}: expected ≥ 0");
        if (options.HangTimeoutSeconds <= 0) throw new BadInputException($"--hang-timeout {options.HangTimeoutSeconds}: expected a positive number of seconds");
        if (options.TrainArgs.Count == 0 || options.TrainArgs[0] != "train")
            throw new BadInputException("launch: expected a train command after --, e.g. launch --nproc 2 -- train --data DIR --out RUN");
        string runDir = ValueOf(options.TrainArgs, "--out") ?? "runs/run";
        string mpirun = FindMpirun();
        string heartbeats = Path.Combine(runDir, ".heartbeat");
        var args = options.TrainArgs.ToList();
        using var runLock = RunLock.Acquire(runDir, log.WriteLine);
        using var term = PosixSignalRegistration.Create(PosixSignal.SIGTERM, Forward);
        using var interrupt = PosixSignalRegistration.Create(PosixSignal.SIGINT, Forward);

        DateTime? failedAt = null;
        long resumeStep = 0;
        for (int attempt = 0; ; attempt++)
        {
            if (Directory.Exists(heartbeats)) Directory.Delete(heartbeats, recursive: true);
            Directory.CreateDirectory(heartbeats);
            var (exit, reason, rank, stderrTail, recovered) = RunOnce(mpirun, args, heartbeats, failedAt, resumeStep);
            if (recovered is { } r) AppendRecord(runDir, new JsonObject { ["event"] = "recovered", ["attempt"] = attempt, ["resume_step"] = resumeStep, ["seconds_to_training"] = Math.Round(r, 2) });
            if (_stopSignal is { } sig)
            {
                log.WriteLine(exit == 0
                    ? $"[launch] job stopped by {sig} after checkpointing; run the same launch command with --resume auto to continue"
                    : $"[launch] job stopped by {sig} (exit code {exit}{(reason is null ? "" : $", {reason}")}); not restarting");
                return exit;
            }
            if (exit == 0 && reason is null)
            {
                log.WriteLine($"[launch] job finished{(attempt > 0 ? $" after {attempt} restart(s)" : "")}");
                return 0;
            }
            if (exit == BadInputExit || reason == $"exited with status {BadInputExit}")
            {
                log.WriteLine($"[launch] {(rank is { } br ? $"rank {br}" : "job")} exited with status {BadInputExit} (bad input or run directory in use): a restart cannot fix it");
                return BadInputExit;
            }
            long failedStep = Heartbeat.Read(heartbeats).Select(h => h.Step).DefaultIfEmpty(0).Max();
            reason ??= $"exit code {exit}";
            log.WriteLine($"[launch] {(rank is { } rk ? $"rank {rk}" : "job")} failed at step {failedStep}: {reason}");
            if (stderrTail.Length > 0 && rank is null) log.WriteLine($"[launch] last error output: {stderrTail.Trim().Split('\n')[^1]}");
            failedAt = DateTime.UtcNow;
            string? latest = new CheckpointStore(runDir).Latest(w => log.WriteLine($"[launch] {w}"));
            resumeStep = latest is null ? 0 : ModelCheckpoint.ReadState(latest).Step;
            AppendRecord(runDir, new JsonObject
            {
                ["event"] = "failure", ["attempt"] = attempt, ["rank"] = rank, ["step"] = failedStep, ["reason"] = reason,
                ["resume_from"] = latest, ["resume_step"] = resumeStep, ["steps_lost"] = failedStep - resumeStep,
            });
            if (attempt >= options.MaxRestarts)
            {
                log.WriteLine($"[launch] giving up after {attempt} restart(s) (--max-restarts {options.MaxRestarts})");
                return 1;
            }
            log.WriteLine($"[launch] restarting all {options.Processes} ranks from {(latest ?? "the beginning")} (restart {attempt + 1}/{options.MaxRestarts}); {failedStep - resumeStep} step(s) to redo");
            SetResumeAuto(args);
        }
    }

    (int Exit, string? Reason, int? Rank, string StderrTail, double? RecoveredSeconds) RunOnce(string mpirun, List<string> trainArgs, string heartbeats, DateTime? failedAt, long resumeStep)
    {
        // setsid: mpirun in its own session, so a terminal's SIGINT reaches only this supervisor, which forwards it.
        bool setsid = File.Exists("/usr/bin/setsid");
        var psi = new ProcessStartInfo(setsid ? "/usr/bin/setsid" : mpirun) { UseShellExecute = false, RedirectStandardError = true, RedirectStandardOutput = true };
        if (setsid) psi.ArgumentList.Add(mpirun);
        foreach (var a in MpirunArgs(options.Processes)) psi.ArgumentList.Add(a);
        psi.ArgumentList.Add("-x"); psi.ArgumentList.Add(Heartbeat.DirVariable);
        psi.ArgumentList.Add("-x"); psi.ArgumentList.Add(RunLock.HolderVariable);
        psi.Environment[RunLock.HolderVariable] = Environment.ProcessId.ToString();
        foreach (var v in new[] { Runtime.LibTorchLoader.EnvVar, "SUPERCLUSTER_CACHE", "XDG_CACHE_HOME" })
            if (Environment.GetEnvironmentVariable(v) is not null) { psi.ArgumentList.Add("-x"); psi.ArgumentList.Add(v); }
        foreach (var a in SelfCommand()) psi.ArgumentList.Add(a);
        foreach (var a in trainArgs) psi.ArgumentList.Add(a);
        psi.Environment[Heartbeat.DirVariable] = Path.GetFullPath(heartbeats);

        var started = DateTime.UtcNow;
        using var p = Process.Start(psi)!;
        lock (this) _mpirun = p;
        if (_stopSignal is not null) ForwardTo(p, Libc.SIGTERM); // signalled while starting
        var tail = new Queue<string>();
        p.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (log) log.WriteLine(e.Data); };
        p.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is null) return;
            lock (log) log.WriteLine(e.Data);
            lock (tail) { tail.Enqueue(e.Data); if (tail.Count > 200) tail.Dequeue(); }
        };
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();

        string? reason = null;
        int? rank = null;
        double? recovered = null;
        var timeout = TimeSpan.FromSeconds(options.HangTimeoutSeconds);
        var startupGrace = timeout + TimeSpan.FromSeconds(60); // dotnet start, libtorch load, MPI init
        while (!p.WaitForExit(250))
        {
            var beats = Heartbeat.Read(heartbeats);
            var now = DateTime.UtcNow;
            if (recovered is null && failedAt is { } f && beats.Count == options.Processes && beats.All(b => b.Step > resumeStep))
            {
                recovered = (now - f).TotalSeconds;
                log.WriteLine($"[launch] training again {recovered:F1} s after the failure (past step {resumeStep})");
            }
            var stale = beats.Where(b => now - b.Written > timeout).OrderBy(b => b.Written).ToList();
            bool missing = beats.Count < options.Processes && now - started > startupGrace;
            if (stale.Count > 0 || missing)
            {
                rank = stale.Count > 0 ? stale[0].Rank : Enumerable.Range(0, options.Processes).First(r => beats.All(b => b.Rank != r));
                reason = stale.Count > 0
                    ? $"no progress for {options.HangTimeoutSeconds:0.#} s (hang; rank {rank} went quiet first at step {stale[0].Step})"
                    : $"no heartbeat {startupGrace.TotalSeconds:0} s after start";
                p.Kill(entireProcessTree: true);
                p.WaitForExit();
                break;
            }
        }
        p.WaitForExit();
        lock (this) _mpirun = null;
        string text;
        lock (tail) text = string.Join('\n', tail);
        if (reason is null && p.ExitCode != 0)
        {
            if (SignalLine().Match(text) is { Success: true } m) { rank = int.Parse(m.Groups[1].Value); reason = $"killed by signal {m.Groups[2].Value}"; }
            else if (ExitLine().Match(text) is { Success: true } e) { rank = int.Parse(e.Groups[1].Value); reason = $"exited with status {e.Groups[2].Value}"; }
        }
        return (p.ExitCode, reason, rank, text, recovered);
    }

    const int BadInputExit = 2;

    /// <summary>SIGTERM/SIGINT to the supervisor: the first is forwarded to every rank as SIGTERM (graceful), a second as well (ranks stop at once).</summary>
    void Forward(PosixSignalContext context)
    {
        context.Cancel = true;
        int n = Interlocked.Increment(ref _signals);
        _stopSignal ??= context.Signal;
        lock (log) log.WriteLine(n == 1
            ? $"[launch] {context.Signal} received: forwarding to every rank (they finish the step, checkpoint and exit); send it again to stop them at once"
            : $"[launch] {context.Signal} received again: forwarding, the ranks stop at once");
        lock (this) if (_mpirun is { } p) ForwardTo(p, Libc.SIGTERM);
    }

    /// <summary>Sends <paramref name="signal"/> to every process below mpirun (the ranks), not to mpirun, which would abort them.</summary>
    static void ForwardTo(Process mpirun, int signal)
    {
        try { if (mpirun.HasExited) return; } catch (InvalidOperationException) { return; }
        foreach (int pid in Descendants(mpirun.Id)) Libc.kill(pid, signal);
    }

    /// <summary>All descendants of <paramref name="root"/>, from /proc (parent pid is field 4 of /proc/PID/stat).</summary>
    static List<int> Descendants(int root)
    {
        var children = new Dictionary<int, List<int>>();
        foreach (var dir in Directory.GetDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out int pid)) continue;
            try
            {
                string stat = File.ReadAllText(Path.Combine(dir, "stat"));
                int ppid = int.Parse(stat[(stat.LastIndexOf(')') + 2)..].Split(' ')[1]);
                if (!children.TryGetValue(ppid, out var list)) children[ppid] = list = [];
                list.Add(pid);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException) { } // exited meanwhile
        }
        var result = new List<int>();
        var queue = new Queue<int>([root]);
        while (queue.Count > 0)
            foreach (int c in children.GetValueOrDefault(queue.Dequeue()) ?? [])
            {
                result.Add(c);
                queue.Enqueue(c);
            }
        return result;
    }

    /// <summary>mpirun flags for one node: as root Open MPI needs --allow-run-as-root, and --oversubscribe for more ranks than cores.</summary>
    public static IEnumerable<string> MpirunArgs(int processes)
    {
        yield return "-np"; yield return processes.ToString();
        if (Environment.UserName == "root") yield return "--allow-run-as-root";
        if (processes > Environment.ProcessorCount) yield return "--oversubscribe";
        yield return "--bind-to"; yield return "none";
    }

    /// <summary>How to start this same CLI again: the apphost, or dotnet + the entry assembly.</summary>
    public static IEnumerable<string> SelfCommand()
    {
        string process = Environment.ProcessPath ?? "dotnet";
        if (Path.GetFileNameWithoutExtension(process) == "dotnet")
            return [process, System.Reflection.Assembly.GetEntryAssembly()!.Location];
        return [process];
    }

    public static string FindMpirun()
    {
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':'))
            if (dir.Length > 0 && File.Exists(Path.Combine(dir, "mpirun"))) return Path.Combine(dir, "mpirun");
        throw new BadInputException("launch: mpirun not found on PATH; install Open MPI (Debian: apt-get install openmpi-bin libopenmpi-dev)");
    }

    static string? ValueOf(IReadOnlyList<string> args, string name)
    {
        for (int i = 0; i < args.Count - 1; i++) if (args[i] == name) return args[i + 1];
        return args.FirstOrDefault(a => a.StartsWith(name + "="))?[(name.Length + 1)..];
    }

    static void SetResumeAuto(List<string> args)
    {
        int i = args.IndexOf("--resume");
        if (i >= 0) args.RemoveRange(i, Math.Min(2, args.Count - i));
        args.RemoveAll(a => a.StartsWith("--resume="));
        args.Add("--resume");
        args.Add("auto");
    }

    static void AppendRecord(string runDir, JsonObject record)
    {
        record["time"] = DateTime.UtcNow.ToString("o");
        Directory.CreateDirectory(runDir);
        File.AppendAllText(Path.Combine(runDir, "restarts.jsonl"), record.ToJsonString() + "\n");
    }
}
