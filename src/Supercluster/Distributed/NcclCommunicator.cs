using System.Runtime.InteropServices;
using Supercluster.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace Supercluster.Distributed;

/// <summary>
/// NCCL (libnccl.so.2) through P/Invoke, on the default stream so it is ordered with torch's kernels. Tensors on this
/// rank's GPU are passed as they are; others (CPU, another GPU, non-contiguous) are staged through it, so NCCL never
/// gets a host pointer. Time in collectives is GPU time between CUDA events (<see cref="CudaEventTimer"/>).
/// The unique id travels over MPI (mpirun) or through a file on a shared filesystem (<c>SUPERCLUSTER_NCCL_ID_FILE</c>,
/// for Slurm without MPI). Each rank binds GPU <c>local_rank</c>.
/// Not exercised in CI (no GPU there): see the README for how a multi-GPU machine tests it.
/// </summary>
public sealed class NcclCommunicator : ICommunicator
{
    const string Lib = "libnccl.so.2";
    public const string IdFileVariable = "SUPERCLUSTER_NCCL_ID_FILE";
    readonly IntPtr _comm;
    readonly MpiCommunicator? _mpi;
    readonly CudaEventTimer _timer;
    readonly SentBytes _sent = new();

    [StructLayout(LayoutKind.Sequential, Size = 128)]
    struct UniqueId { public unsafe fixed byte Bytes[128]; }

    public NcclCommunicator(LaunchEnvironment env)
    {
        if (!cuda.is_available()) throw new BadInputException("--backend nccl: CUDA is not available here (NCCL needs GPUs; use --backend mpi for CPU ranks)");
        if (!NativeLibrary.TryLoad(Lib, out _)) throw new BadInputException($"--backend nccl: cannot load {Lib}; install NCCL or use --backend mpi");
        Rank = env.Rank;
        WorldSize = env.WorldSize;
        LocalRank = env.LocalRank;
        if (LocalRank >= cuda.device_count())
            throw new BadInputException($"local rank {LocalRank} has no GPU: this node has {cuda.device_count()} (launch at most one rank per GPU)");
        CudaDriver.MakeCurrent(LocalRank);
        Device = new Device(DeviceType.CUDA, LocalRank);
        _timer = new CudaEventTimer(LocalRank);

        var id = new UniqueId();
        if (Rank == 0) Check(ncclGetUniqueId(ref id), "ncclGetUniqueId");
        var bytes = ToBytes(id);
        string? idFile = Environment.GetEnvironmentVariable(IdFileVariable);
        if (env.Launcher == "mpirun" || idFile is null)
        {
            _mpi = new MpiCommunicator(env);
            using var t = tensor(bytes.Select(b => (long)b).ToArray());
            _mpi.Broadcast(t, 0);
            bytes = t.data<long>().Select(v => (byte)v).ToArray();
        }
        else
        {
            bytes = ExchangeThroughFile(idFile, bytes);
        }
        id = FromBytes(bytes);
        Check(ncclCommInitRank(out _comm, WorldSize, id, Rank), "ncclCommInitRank");
    }

    /// <summary>A split of <paramref name="parent"/> (ncclCommSplit, NCCL ≥ 2.18): shares its GPU, not its MPI bootstrap.</summary>
    NcclCommunicator(NcclCommunicator parent, IntPtr comm, string group)
    {
        _comm = comm;
        _isSplit = true;
        Group = group;
        LocalRank = parent.LocalRank;
        Device = parent.Device;
        _timer = new CudaEventTimer(LocalRank);
        Check(ncclCommUserRank(comm, out int rank), "ncclCommUserRank");
        Check(ncclCommCount(comm, out int count), "ncclCommCount");
        Rank = rank;
        WorldSize = count;
    }

    readonly bool _isSplit;
    public string Group { get; } = "world";
    public string Backend => "nccl";
    public int Rank { get; }
    public int WorldSize { get; }
    public int LocalRank { get; }
    public Device Device { get; }

    public double TakeCommunicationSeconds() => _timer.TakeSeconds();
    public double TakeSentBytes() => _sent.Take();

    public void AllReduceSum(Tensor t)
    {
        _sent.AllReduce(t, WorldSize);
        Staged(t, d => Call("ncclAllReduce", () => ncclAllReduce(P(d), P(d), (nuint)d.numel(), Type(d), 0, _comm, IntPtr.Zero)));
    }
    public void ReduceScatterSum(Tensor input, Tensor output)
    {
        _sent.ReduceScatter(input, WorldSize);
        Staged(input, din => Staged(output, dout =>
            Call("ncclReduceScatter", () => ncclReduceScatter(P(din), P(dout), (nuint)dout.numel(), Type(din), 0, _comm, IntPtr.Zero)), copyIn: false));
    }
    public void AllGather(Tensor input, Tensor output)
    {
        _sent.AllGather(output, WorldSize);
        Staged(input, din => Staged(output, dout =>
            Call("ncclAllGather", () => ncclAllGather(P(din), P(dout), (nuint)din.numel(), Type(din), _comm, IntPtr.Zero)), copyIn: false));
    }
    public void Broadcast(Tensor t, int root)
    {
        _sent.Broadcast(t, WorldSize);
        Staged(t, d => Call("ncclBroadcast", () => ncclBroadcast(P(d), P(d), (nuint)d.numel(), Type(d), root, _comm, IntPtr.Zero)));
    }
    static IntPtr P(Tensor t) => LibTorchLoader.DataPtr(t);

    /// <summary>Runs <paramref name="op"/> on <paramref name="t"/> or on its copy on this rank's GPU.</summary>
    void Staged(Tensor t, Action<Tensor> op, bool copyIn = true) => Staging.Run(t, Device, op, copyIn);

    /// <summary>Enqueues one NCCL call between timing events.</summary>
    void Call(string name, Func<int> call) => _timer.Time(() => Check(call(), name));

    public ICommunicator Split(int color, int key, string group)
    {
        Check(ncclCommSplit(_comm, color, key, out var comm, IntPtr.Zero), "ncclCommSplit");
        return new NcclCommunicator(this, comm, group);
    }

    public void Send(Tensor t, int peer) => SendRecv(t, peer, null, -1);
    public void Recv(Tensor t, int peer) => SendRecv(null, -1, t, peer);

    /// <summary>Send and receive in one NCCL group, so two ranks exchanging in opposite directions do not deadlock.</summary>
    public void SendRecv(Tensor? send, int dest, Tensor? recv, int source)
    {
        if (send is null && recv is null) return;
        if (send is not null) _sent.Send(send);
        void Both(Tensor? ds, Tensor? dr) => Call("ncclSend/ncclRecv", () =>
        {
            Check(ncclGroupStart(), "ncclGroupStart");
            if (ds is not null) Check(ncclSend(P(ds), (nuint)ds.numel(), Type(ds), dest, _comm, IntPtr.Zero), "ncclSend");
            if (dr is not null) Check(ncclRecv(P(dr), (nuint)dr.numel(), Type(dr), source, _comm, IntPtr.Zero), "ncclRecv");
            return ncclGroupEnd();
        });
        if (send is null) Staged(recv!, dr => Both(null, dr), copyIn: false);
        else if (recv is null) Staged(send, ds => Both(ds, null));
        else Staged(send, ds => Staged(recv, dr => Both(ds, dr), copyIn: false));
    }

    /// <summary>All-to-all as one group of sends and receives (NCCL has no all-to-all-v primitive).</summary>
    public void AllToAll(Tensor input, long[] sendCounts, Tensor output, long[] recvCounts)
    {
        if (sendCounts.Length != WorldSize || recvCounts.Length != WorldSize)
            throw new ArgumentException($"all-to-all: {sendCounts.Length} send and {recvCounts.Length} receive counts, expected {WorldSize} each");
        _sent.AllToAll(input, sendCounts, Rank);
        Staged(input, din => Staged(output, dout => Call("ncclSend/ncclRecv all-to-all", () =>
        {
            Check(ncclGroupStart(), "ncclGroupStart");
            long so = 0, ro = 0;
            for (int peer = 0; peer < WorldSize; peer++)
            {
                if (sendCounts[peer] > 0) Check(ncclSend(P(din.narrow(0, so, sendCounts[peer])), (nuint)sendCounts[peer], Type(din), peer, _comm, IntPtr.Zero), "ncclSend");
                if (recvCounts[peer] > 0) Check(ncclRecv(P(dout.narrow(0, ro, recvCounts[peer])), (nuint)recvCounts[peer], Type(dout), peer, _comm, IntPtr.Zero), "ncclRecv");
                so += sendCounts[peer];
                ro += recvCounts[peer];
            }
            return ncclGroupEnd();
        }), copyIn: false));
    }

    public void Barrier()
    {
        using var one = ones(1, device: Device);
        AllReduceSum(one);
        cuda.synchronize();
    }

    static int Type(Tensor t) => t.dtype switch
    {
        ScalarType.Float32 => 7, ScalarType.Float64 => 8, ScalarType.BFloat16 => 9, ScalarType.Float16 => 6, ScalarType.Int64 => 4, ScalarType.Int32 => 2, ScalarType.Byte => 1,
        _ => throw new NotSupportedException($"NCCL collective on {t.dtype}"),
    };

    byte[] ExchangeThroughFile(string path, byte[] mine)
    {
        if (Rank == 0)
        {
            File.WriteAllBytes(path + ".tmp", mine);
            File.Move(path + ".tmp", path, overwrite: true);
            return mine;
        }
        var deadline = DateTime.UtcNow.AddMinutes(5);
        while (!File.Exists(path) || new FileInfo(path).Length != 128)
        {
            if (DateTime.UtcNow > deadline) throw new TimeoutException($"{IdFileVariable}={path}: rank 0 did not write the NCCL id within 5 minutes");
            Thread.Sleep(200);
        }
        return File.ReadAllBytes(path);
    }

    static unsafe byte[] ToBytes(UniqueId id) => new ReadOnlySpan<byte>(id.Bytes, 128).ToArray();
    static unsafe UniqueId FromBytes(byte[] b) { var id = new UniqueId(); b.CopyTo(new Span<byte>(id.Bytes, 128)); return id; }

    static void Check(int rc, string call)
    {
        if (rc != 0) throw new InvalidOperationException($"{call} failed: NCCL error {rc}");
    }

    public void Dispose()
    {
        ncclCommDestroy(_comm);
        _timer.Dispose();
        if (_isSplit) return;
        _mpi?.Dispose();
    }

    /// <summary>Byte exchanges are host-side (prepare): through MPI when NCCL was bootstrapped over it.</summary>
    public byte[][] AllToAllBytes(byte[][] send) => _mpi?.AllToAllBytes(send) ?? throw new NotSupportedException("nccl: byte all-to-all needs MPI; use --backend mpi");
    public byte[][] AllGatherBytes(byte[] send) => _mpi?.AllGatherBytes(send) ?? throw new NotSupportedException("nccl: byte all-gather needs MPI; use --backend mpi");

    [DllImport(Lib)] static extern int ncclGetUniqueId(ref UniqueId id);
    [DllImport(Lib)] static extern int ncclCommInitRank(out IntPtr comm, int nranks, UniqueId id, int rank);
    [DllImport(Lib)] static extern int ncclCommDestroy(IntPtr comm);
    [DllImport(Lib)] static extern int ncclCommSplit(IntPtr comm, int color, int key, out IntPtr newComm, IntPtr config);
    [DllImport(Lib)] static extern int ncclCommUserRank(IntPtr comm, out int rank);
    [DllImport(Lib)] static extern int ncclCommCount(IntPtr comm, out int count);
    [DllImport(Lib)] static extern int ncclGroupStart();
    [DllImport(Lib)] static extern int ncclGroupEnd();
    [DllImport(Lib)] static extern int ncclSend(IntPtr send, nuint count, int type, int peer, IntPtr comm, IntPtr stream);
    [DllImport(Lib)] static extern int ncclRecv(IntPtr recv, nuint count, int type, int peer, IntPtr comm, IntPtr stream);
    [DllImport(Lib)] static extern int ncclAllReduce(IntPtr send, IntPtr recv, nuint count, int type, int op, IntPtr comm, IntPtr stream);
    [DllImport(Lib)] static extern int ncclReduceScatter(IntPtr send, IntPtr recv, nuint recvCount, int type, int op, IntPtr comm, IntPtr stream);
    [DllImport(Lib)] static extern int ncclAllGather(IntPtr send, IntPtr recv, nuint sendCount, int type, IntPtr comm, IntPtr stream);
    [DllImport(Lib)] static extern int ncclBroadcast(IntPtr send, IntPtr recv, nuint count, int type, int root, IntPtr comm, IntPtr stream);
}
