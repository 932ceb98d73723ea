using static TorchSharp.torch;

namespace Supercluster.Distributed;

/// <summary>One rank: every collective is the identity.</summary>
public sealed class SingleProcess : ICommunicator
{
    public string Backend => "single";
    public int Rank => 0;
    public int WorldSize => 1;
    public int LocalRank => 0;
    public Device Device => CPU;
    public double TakeCommunicationSeconds() => 0;
    public void AllReduceSum(Tensor t) { }
    public void ReduceScatterSum(Tensor input, Tensor output) => output.copy_(input);
    public void AllGather(Tensor input, Tensor output) => output.copy_(input);
    public void Broadcast(Tensor t, int root) { }
    public void Barrier() { }
    public void Dispose() { }
    public byte[][] AllToAllBytes(byte[][] send) => send.Length == 1 ? [send[0]] : throw new ArgumentException("one rank: send holds one buffer");
    public byte[][] AllGatherBytes(byte[] send) => [send];
}
