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
    /// Host bytes, all-to-all: rank r sends <c>send[d]</c> to rank d and returns <c>recv[s]</c> = what rank s sent to r.
    /// For CPU-side exchanges (prepare's deduplication keys); at most 2 GiB received per call.
    /// </summary>
    byte[][] AllToAllBytes(byte[][] send) => throw new NotSupportedException($"{Backend}: byte all-to-all is not supported");

    /// <summary>Host bytes, all-gather of variable length: returns every rank's <paramref name="send"/> in rank order.</summary>
    byte[][] AllGatherBytes(byte[] send) => throw new NotSupportedException($"{Backend}: byte all-gather is not supported");
}
