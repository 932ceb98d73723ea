namespace Supercluster.Planning;

/// <summary>
/// Alpha-beta cost of NCCL-style collectives on n ranks (Thakur, Rabenseifner &amp; Gropp 2005; Patarasuk &amp; Yuan 2009):
/// a ring all-reduce moves 2(n−1)/n of the buffer through each link in 2(n−1) steps;
/// reduce-scatter and all-gather move (n−1)/n in n−1 steps. Bandwidth in bytes/s (already scaled by the achievable fraction).
/// <para>
/// The <c>…Sent</c> functions are the one convention for "bytes a rank sends" in a collective: what every communicator
/// counts per call (<see cref="Distributed.ICommunicator.TakeSentBytes"/>) and what <see cref="CommunicationVolume"/>
/// predicts, so measured and predicted volumes are the same quantity whatever algorithm MPI or NCCL picks. They are the
/// ring (bandwidth-optimal) volumes: all-reduce 2(n−1)/n·B of a B-byte buffer; reduce-scatter (n−1)/n·B of the B-byte
/// input; all-gather (n−1)/n·B of the B-byte output; broadcast (n−1)/n·B (scatter + all-gather, van de Geijn); all-to-all
/// the bytes addressed to other ranks; point to point the bytes sent (a receive sends nothing).
/// </para>
/// </summary>
public static class Collectives
{
    public static double AllReduceSent(double bytes, long n) => n <= 1 ? 0 : 2.0 * (n - 1) / n * bytes;

    /// <param name="bytes">The whole input vector (every rank's block).</param>
    public static double ReduceScatterSent(double bytes, long n) => n <= 1 ? 0 : (double)(n - 1) / n * bytes;

    /// <param name="bytes">The whole output vector (every rank's block).</param>
    public static double AllGatherSent(double bytes, long n) => ReduceScatterSent(bytes, n);

    public static double BroadcastSent(double bytes, long n) => ReduceScatterSent(bytes, n);

    public static double RingAllReduce(double bytes, long n, double bytesPerSecond, double latency) =>
        n <= 1 ? 0 : AllReduceSent(bytes, n) / bytesPerSecond + 2.0 * (n - 1) * latency;

    public static double ReduceScatter(double bytes, long n, double bytesPerSecond, double latency) =>
        n <= 1 ? 0 : ReduceScatterSent(bytes, n) / bytesPerSecond + (n - 1) * latency;

    public static double AllGather(double bytes, long n, double bytesPerSecond, double latency) =>
        ReduceScatter(bytes, n, bytesPerSecond, latency);

    /// <summary>All-to-all where each rank holds <paramref name="bytes"/> and keeps 1/n of it.</summary>
    public static double AllToAll(double bytes, long n, double bytesPerSecond, double latency) =>
        n <= 1 ? 0 : (double)(n - 1) / n * bytes / bytesPerSecond + latency;

    public static double PointToPoint(double bytes, double bytesPerSecond, double latency) => bytes / bytesPerSecond + latency;
}
