using static TorchSharp.torch;

namespace Supercluster.Distributed;

/// <summary>
/// Collectives over the ranks of one job. Tensors are contiguous and live where the backend wants them
/// (CPU for MPI, which stages CUDA tensors through host memory; CUDA for NCCL). All calls are collective:
/// every rank makes the same calls in the same order.
/// </summary>
public interface ICommunicator : IDisposable
{
    string Backend { get; }
    int Rank { get; }
    int WorldSize { get; }
    int LocalRank { get; }

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
