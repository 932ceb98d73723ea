using static TorchSharp.torch;

namespace Supercluster.Distributed;

/// <summary>
/// Collectives over the ranks of one job. Tensors may live on any device and need not be contiguous: each backend
/// works on its own <see cref="Device"/> (host memory for MPI, the rank's GPU for NCCL) and stages other tensors there
/// and back (<see cref="Staging"/>), so pass tensors on <see cref="Device"/> to avoid the copies. All calls are
/// collective: every rank makes the same calls in the same order.
/// </summary>
public interface ICommunicator : IDisposable
{
    string Backend { get; }
    /// <summary>Which ranks this is: "world", or the parallel dimension of a sub-communicator ("tp", "cp", "dp", "pp", "ep" …).</summary>
    string Group => "world";
    /// <summary>This rank's position within <see cref="Group"/> (0 … WorldSize−1).</summary>
    int Rank { get; }
    int WorldSize { get; }
    int LocalRank { get; }

    /// <summary>Where collectives run without staging copies: CPU for MPI and a single process, cuda:local_rank for NCCL.</summary>
    Device Device { get; }

    /// <summary>
    /// Seconds spent in collectives since the last call, measured where they run: MPI's blocking calls by the host clock
    /// (staging copies excluded); NCCL's by CUDA events around each call on the stream it runs on, since the host only
    /// enqueues them (reading waits for them to finish: read once per step, when logging).
    /// </summary>
    double TakeCommunicationSeconds();

    /// <summary>
    /// Bytes this rank sent in collectives and point-to-point calls since the last call, counted per call by the per-rank
    /// convention of <see cref="Planning.Collectives"/> (ring all-reduce 2(n−1)/n of the buffer, reduce-scatter and all-gather
    /// (n−1)/n of the whole vector, a send its size), so it compares with <c>plan</c>'s predicted volume.
    /// </summary>
    double TakeSentBytes();

    /// <summary>In place: every rank ends with the element-wise sum over ranks.</summary>
    void AllReduceSum(Tensor t);

    /// <summary><paramref name="output"/> (length n/world) gets this rank's block of the sum of every rank's <paramref name="input"/> (length n).</summary>
    void ReduceScatterSum(Tensor input, Tensor output);

    /// <summary><paramref name="output"/> (length n·world) gets every rank's <paramref name="input"/> (length n) in rank order.</summary>
    void AllGather(Tensor input, Tensor output);

    /// <summary>In place: every rank ends with <paramref name="root"/>'s values.</summary>
    void Broadcast(Tensor t, int root);

    void Barrier();

    /// <summary>
    /// A barrier for waits that can be long (ranks finishing their shares of a data pass at different times): a
    /// waiting rank sleeps instead of spinning a core, so the threads of ranks still working on that node keep it. Not
    /// for a training step's latency-bound waits. Default: <see cref="Barrier"/>.
    /// </summary>
    void IdleBarrier() => Barrier();

    /// <summary>
    /// A communicator over the ranks of this one that pass the same <paramref name="color"/>, ordered by
    /// <paramref name="key"/> (MPI_Comm_split's semantics; NCCL: ncclCommSplit). Collective over this communicator.
    /// The caller disposes it before this one. Times its own calls (<see cref="TakeCommunicationSeconds"/>).
    /// </summary>
    ICommunicator Split(int color, int key, string group);

    /// <summary>Point to point: sends <paramref name="t"/> to <paramref name="peer"/> (a rank of this communicator); blocks until it can be reused.</summary>
    void Send(Tensor t, int peer);

    /// <summary>Point to point: fills <paramref name="t"/> (its shape and dtype agreed with the sender) from <paramref name="peer"/>.</summary>
    void Recv(Tensor t, int peer);

    /// <summary>
    /// Sends <paramref name="send"/> to <paramref name="dest"/> while receiving <paramref name="recv"/> from
    /// <paramref name="source"/>, without deadlock when two ranks exchange (a pipeline's forward/backward crossing).
    /// Either side may be null (send-only or receive-only).
    /// </summary>
    void SendRecv(Tensor? send, int dest, Tensor? recv, int source);

    /// <summary>
    /// All-to-all of flat buffers with per-rank element counts: rank r sends <paramref name="sendCounts"/>[d] elements to rank d, taken from <c>input</c> at the
    /// running sum of the counts before d, and receives rank s's block into <c>output</c> at the running sum of <paramref name="recvCounts"/>
    /// (MPI_Alltoallv; NCCL: grouped ncclSend/ncclRecv). Counts must agree pairwise across ranks.
    /// </summary>
    void AllToAll(Tensor input, long[] sendCounts, Tensor output, long[] recvCounts);

    /// <summary>
    /// Host bytes, all-to-all: rank r sends <c>send[d]</c> to rank d and returns <c>recv[s]</c> = what rank s sent to r.
    /// For CPU-side exchanges (prepare's deduplication keys); at most 2 GiB received per call.
    /// </summary>
    byte[][] AllToAllBytes(byte[][] send) => throw new NotSupportedException($"{Backend}: byte all-to-all is not supported");

    /// <summary>
    /// <see cref="AllToAllBytes"/> on one buffer: <paramref name="send"/> holds <c>sendCounts[0]</c> bytes for rank 0, then
    /// rank 1's, …; returns what every rank sent here, in rank order, back to back (no per-rank copies).
    /// </summary>
    byte[] AllToAllFlat(ReadOnlySpan<byte> send, int[] sendCounts)
    {
        var parts = new byte[sendCounts.Length][];
        for (int d = 0, at = 0; d < parts.Length; at += sendCounts[d], d++) parts[d] = send.Slice(at, sendCounts[d]).ToArray();
        var recv = AllToAllBytes(parts);
        var flat = new byte[recv.Sum(p => (long)p.Length)];
        for (int s = 0, at = 0; s < recv.Length; at += recv[s].Length, s++) recv[s].CopyTo(flat, at);
        return flat;
    }

    /// <summary>Host bytes, all-gather of variable length: returns every rank's <paramref name="send"/> in rank order.</summary>
    byte[][] AllGatherBytes(byte[] send) => throw new NotSupportedException($"{Backend}: byte all-gather is not supported");
}
