using static TorchSharp.torch;

namespace Supercluster.Distributed;

/// <summary>One rank: every collective is the identity.</summary>
public sealed class SingleProcess(string group = "world") : ICommunicator
{
    public string Backend => "single";
    public string Group => group;
    public int Rank => 0;
    public int WorldSize => 1;
    public int LocalRank => 0;
    public Device Device => CPU;
    public double TakeCommunicationSeconds() => 0;
    public double TakeSentBytes() => 0;
    public void AllReduceSum(Tensor t) { }
    public void ReduceScatterSum(Tensor input, Tensor output) => output.copy_(input);
    public void AllGather(Tensor input, Tensor output) => output.copy_(input);
    public void Broadcast(Tensor t, int root) { }
    public void Barrier() { }
    public void Dispose() { }
    public ICommunicator Split(int color, int key, string group) => new SingleProcess(group);
    public void Send(Tensor t, int peer) => throw new InvalidOperationException($"one rank: no peer {peer} to send to");
    public void Recv(Tensor t, int peer) => throw new InvalidOperationException($"one rank: no peer {peer} to receive from");
    public void SendRecv(Tensor? send, int dest, Tensor? recv, int source)
    {
        // Only a rank exchanging with itself is meaningful here (a ring of one).
        if ((send is not null && dest != 0) || (recv is not null && source != 0)) throw new InvalidOperationException("one rank: send/receive peers must be rank 0");
        if (send is not null && recv is not null) recv.copy_(send);
    }
    public void AllToAll(Tensor input, long[] sendCounts, Tensor output, long[] recvCounts)
    {
        if (sendCounts.Length != 1 || recvCounts.Length != 1 || sendCounts[0] != recvCounts[0]) throw new ArgumentException("one rank: one count each, equal");
        output.narrow(0, 0, recvCounts[0]).copy_(input.narrow(0, 0, sendCounts[0]));
    }
    public byte[][] AllToAllBytes(byte[][] send) => send.Length == 1 ? [send[0]] : throw new ArgumentException("one rank: send holds one buffer");
    public byte[][] AllGatherBytes(byte[] send) => [send];
}
