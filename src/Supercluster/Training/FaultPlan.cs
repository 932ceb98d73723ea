using System.Diagnostics;
using System.Globalization;

namespace Supercluster.Training;

/// <summary>
/// Injected failures for tests and drills: <c>kill:rank=R:step=S</c> (SIGKILL itself), <c>hang:rank=R:step=S</c>
/// (stops making progress), <c>crash-in-checkpoint:step=S</c> (dies after writing the checkpoint's files, before its manifest),
/// <c>sigterm:rank=R:step=S</c> (sends itself a real SIGTERM at the end of step S, as a preempting scheduler would).
/// Each fires once per run directory (a marker file records it), so a restarted job runs past it.
/// </summary>
public sealed record FaultPlan(string Kind, int Rank, long Step)
{
    public static FaultPlan? Parse(string? spec)
    {
        if (string.IsNullOrWhiteSpace(spec)) return null;
        var parts = spec.Split(':');
        string kind = parts[0];
        if (kind is not ("kill" or "hang" or "crash-in-checkpoint" or "sigterm"))
            throw new BadInputException($"--fault: unknown kind '{kind}' in '{spec}', expected kill, hang, crash-in-checkpoint or sigterm");
        int rank = 0; long step = -1;
        foreach (var kv in parts.Skip(1))
        {
            var p = kv.Split('=', 2);
            if (p.Length != 2 || !long.TryParse(p[1], NumberStyles.Integer, CultureInfo.InvariantCulture, out long value) || value < 0)
                throw new BadInputException($"--fault: '{kv}' in '{spec}' is not key=non-negative-integer");
            if (p[0] == "rank") rank = (int)value;
            else if (p[0] == "step") step = value;
            else throw new BadInputException($"--fault: unknown key '{p[0]}' in '{spec}', expected rank or step");
        }
        if (step < 0) throw new BadInputException($"--fault: '{spec}' needs step=S");
        return new FaultPlan(kind, rank, step);
    }

    /// <summary>Written when a fault fires (before a hang begins), so it fires once per run directory.</summary>
    public static string MarkerPath(string runDir, string kind, int rank, long step) => Path.Combine(runDir, $".fault-{kind}-rank{rank}-step{step}");

    /// <summary>Fires the fault if it matches (kind, rank, step) and has not fired in this run directory before.</summary>
    public void MaybeFire(string kind, int rank, long step, string runDir, TextWriter log)
    {
        if (kind != Kind || rank != Rank || step != Step) return;
        string marker = MarkerPath(runDir, Kind, Rank, Step);
        if (File.Exists(marker)) return;
        File.WriteAllText(marker, DateTime.UtcNow.ToString("o"));
        log.WriteLine($"fault injection: {Kind} on rank {Rank} at step {Step}");
        log.Flush();
        if (Kind == "hang") Thread.Sleep(Timeout.Infinite);
        if (Kind == "sigterm")
        {
            // A real signal through the kernel; wait until the handler has seen it, so the stop check that follows does.
            int before = StopSignal.Delivered;
            Checkpointing.Libc.kill(Environment.ProcessId, Checkpointing.Libc.SIGTERM);
            SpinWait.SpinUntil(() => StopSignal.Delivered > before, TimeSpan.FromSeconds(30));
            return;
        }
        Process.GetCurrentProcess().Kill(); // SIGKILL: no finally blocks, no flush, like a real crash
    }
}
