using Supercluster.Planning;
using static TorchSharp.torch;

namespace Supercluster.Distributed;

/// <summary>
/// One communicator's count of the bytes this rank sent since the last <see cref="Take"/>, by the per-rank convention of
/// <see cref="Collectives"/> (the same functions <c>plan</c> predicts with). Counted from the tensors' sizes as each call
/// is made, so it costs no synchronisation on any backend.
/// </summary>
public sealed class SentBytes
{
    readonly Lock _lock = new();
    double _bytes;

    static double Size(Tensor t) => (double)t.numel() * t.ElementSize;

    void Add(double bytes) { lock (_lock) _bytes += bytes; }

    public double Take() { lock (_lock) { var b = _bytes; _bytes = 0; return b; } }

    public void AllReduce(Tensor t, int n) => Add(Collectives.AllReduceSent(Size(t), n));
    /// <param name="input">The whole input (every rank's block).</param>
    public void ReduceScatter(Tensor input, int n) => Add(Collectives.ReduceScatterSent(Size(input), n));
    /// <param name="output">The whole output (every rank's block).</param>
    public void AllGather(Tensor output, int n) => Add(Collectives.AllGatherSent(Size(output), n));
    public void Broadcast(Tensor t, int n) => Add(Collectives.BroadcastSent(Size(t), n));
    public void Send(Tensor t) => Add(Size(t));
    /// <summary>All-to-all: the elements addressed to other ranks (this rank's own block stays here).</summary>
    public void AllToAll(Tensor input, long[] sendCounts, int rank) =>
        Add((double)(sendCounts.Sum() - sendCounts[rank]) * input.ElementSize);
}
