namespace Supercluster.Planning;

/// <summary>
/// Alpha-beta cost of NCCL-style collectives on n ranks (Thakur, Rabenseifner &amp; Gropp 2005; Patarasuk &amp; Yuan 2009):
/// a ring all-reduce moves 2(n−1)/n of the buffer through each link in 2(n−1) steps;
/// reduce-scatter and all-gather move (n−1)/n in n−1 steps. Bandwidth in bytes/s (already scaled by the achievable fraction).
/// </summary>
public static class Collectives
{
    public static double RingAllReduce(double bytes, long n, double bytesPerSecond, double latency) =>
        n <= 1 ? 0 : 2.0 * (n - 1) / n * bytes / bytesPerSecond + 2.0 * (n - 1) * latency;

    public static double ReduceScatter(double bytes, long n, double bytesPerSecond, double latency) =>
        n <= 1 ? 0 : (double)(n - 1) / n * bytes / bytesPerSecond + (n - 1) * latency;

    public static double AllGather(double bytes, long n, double bytesPerSecond, double latency) =>
        ReduceScatter(bytes, n, bytesPerSecond, latency);

    /// <summary>All-to-all where each rank holds <paramref name="bytes"/> and keeps 1/n of it.</summary>
    public static double AllToAll(double bytes, long n, double bytesPerSecond, double latency) =>
        n <= 1 ? 0 : (double)(n - 1) / n * bytes / bytesPerSecond + latency;

    public static double PointToPoint(double bytes, double bytesPerSecond, double latency) => bytes / bytesPerSecond + latency;
}
