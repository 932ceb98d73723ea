namespace Supercluster.Planning;

/// <summary>Failure and checkpoint figures for one run.</summary>
public sealed record Reliability(double InterruptionsPerDay, double MtbfHours, double CheckpointBytes, double CheckpointWriteSeconds,
    double CheckpointIntervalHours, double Goodput, double ExpectedInterruptions);

/// <summary>
/// Failures are independent across nodes at <c>rate</c> per 1000 node-days, so a cluster of n nodes fails every
/// M = 1000/(rate·n) days. Default rate: Llama 3 (Meta 2024, §3.3.4) saw 419 unexpected interruptions in 54 days on
/// 16,384 H100s (2,048 nodes): 419/(54·2048)·1000 ≈ 3.79 per 1000 node-days.
/// Checkpoint interval τ (Young 1974: τ = √(2δM); Daly 2006, eq. 37: τ = √(2δM)·[1 + ⅓√(δ/2M) + δ/(18M)] − δ for δ &lt; 2M, else M),
/// with δ the checkpoint write time. Goodput (Daly 2006): share of wall-clock time doing new work,
/// τ/(τ+δ) · (1 − (R + (τ+δ)/2)/M), R the restart time (re-schedule, reload, warm-up).
/// </summary>
public static class ReliabilityModel
{
    public const double DefaultFailuresPer1000NodeDays = 419.0 / (54 * 2048) * 1000;

    public static double MtbfSeconds(double failuresPer1000NodeDays, long nodes) => 1000.0 / (failuresPer1000NodeDays * nodes) * 86400;

    public static double YoungInterval(double delta, double mtbf) => Math.Sqrt(2 * delta * mtbf);

    public static double DalyInterval(double delta, double mtbf) => delta >= 2 * mtbf
        ? mtbf
        : Math.Sqrt(2 * delta * mtbf) * (1 + Math.Sqrt(delta / (2 * mtbf)) / 3 + delta / (18 * mtbf)) - delta;

    public static double Goodput(double tau, double delta, double restart, double mtbf) =>
        Math.Max(0, tau / (tau + delta) * (1 - (restart + (tau + delta) / 2) / mtbf));

    /// <param name="checkpointBytes">weights + optimizer state written per checkpoint</param>
    /// <param name="writeBytesPerSecond">aggregate storage write bandwidth</param>
    /// <param name="runSecondsWithoutFailures">compute time of the run, to count expected interruptions</param>
    public static Reliability Estimate(long nodes, double failuresPer1000NodeDays, double checkpointBytes, double writeBytesPerSecond,
        double restartSeconds, double runSecondsWithoutFailures)
    {
        double mtbf = MtbfSeconds(failuresPer1000NodeDays, nodes);
        double delta = checkpointBytes / writeBytesPerSecond;
        double tau = DalyInterval(delta, mtbf);
        double goodput = Goodput(tau, delta, restartSeconds, mtbf);
        double wall = goodput > 0 ? runSecondsWithoutFailures / goodput : double.PositiveInfinity;
        return new(86400 / mtbf, mtbf / 3600, checkpointBytes, delta, tau / 3600, goodput, wall / mtbf);
    }
}
