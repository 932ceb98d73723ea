using System.Diagnostics;
using System.Runtime.InteropServices;
using TorchSharp;
using Supercluster.Runtime;
using static TorchSharp.torch;

namespace Supercluster.Distributed;

/// <summary>
/// Open MPI (libmpi.so.40) through P/Invoke. Handles (MPI_COMM_WORLD, MPI_FLOAT, MPI_SUM) are the addresses of
/// exported globals (ompi_mpi_comm_world …). Contiguous CPU tensors are passed directly; others (CUDA, non-contiguous)
/// are staged through host memory.
/// </summary>
public sealed class MpiCommunicator : ICommunicator
{
    const string Lib = "libmpi.so.40";
    readonly IntPtr _world, _sum;   // _world: this communicator (MPI_COMM_WORLD, or a split of it)
    readonly Dictionary<ScalarType, IntPtr> _types = [];
    readonly bool _isSplit;         // a split is freed (MPI_Comm_free); the world communicator finalizes MPI
    bool _disposed;
    long _commTicks;      // Stopwatch ticks inside collectives since the last TakeCommunicationSeconds
    readonly SentBytes _sent = new();

    public MpiCommunicator(LaunchEnvironment env)
    {
        // RTLD_GLOBAL: Open MPI's plugins resolve symbols of libmpi when they are loaded.
        if (!NativeLoader.TryLoadGlobal(Lib, out var lib, out var error))
            throw new BadInputException($"--backend mpi: cannot load {Lib} ({error}); install Open MPI (Debian: openmpi-bin libopenmpi-dev)");
        Check(MPI_Initialized(out int initialised), "MPI_Initialized");
        if (initialised == 0) Check(MPI_Init(IntPtr.Zero, IntPtr.Zero), "MPI_Init");
        _world = NativeLibrary.GetExport(lib, "ompi_mpi_comm_world");
        _sum = NativeLibrary.GetExport(lib, "ompi_mpi_op_sum");
        _types[ScalarType.Float32] = NativeLibrary.GetExport(lib, "ompi_mpi_float");
        _types[ScalarType.Float64] = NativeLibrary.GetExport(lib, "ompi_mpi_double");
        _types[ScalarType.Int64] = NativeLibrary.GetExport(lib, "ompi_mpi_long");
        _types[ScalarType.Int32] = NativeLibrary.GetExport(lib, "ompi_mpi_int");
        _types[ScalarType.Byte] = NativeLibrary.GetExport(lib, "ompi_mpi_unsigned_char");
        Check(MPI_Comm_rank(_world, out int rank), "MPI_Comm_rank");
        Check(MPI_Comm_size(_world, out int size), "MPI_Comm_size");
        Rank = rank;
        WorldSize = size;
        LocalRank = env.WorldSize == size ? env.LocalRank : rank;
    }

    MpiCommunicator(MpiCommunicator parent, IntPtr comm, string group)
    {
        _world = comm;
        _sum = parent._sum;
        _types = parent._types;
        _isSplit = true;
        Group = group;
        LocalRank = parent.LocalRank;
        Check(MPI_Comm_rank(comm, out int rank), "MPI_Comm_rank");
        Check(MPI_Comm_size(comm, out int size), "MPI_Comm_size");
        Rank = rank;
        WorldSize = size;
    }

    public string Backend => "mpi";
    public string Group { get; } = "world";
    public int Rank { get; }
    public int WorldSize { get; }
    public int LocalRank { get; }
    public Device Device => CPU;

    public double TakeCommunicationSeconds() => (double)Interlocked.Exchange(ref _commTicks, 0) / Stopwatch.Frequency;
    public double TakeSentBytes() => _sent.Take();

    public void AllReduceSum(Tensor t)
    {
        _sent.AllReduce(t, WorldSize);
        Staged(t, host => Call("MPI_Allreduce", () => MPI_Allreduce(InPlace, Ptr(host), (int)host.numel(), Type(host), _sum, _world)));
    }

    public void ReduceScatterSum(Tensor input, Tensor output)
    {
        _sent.ReduceScatter(input, WorldSize);
        Staged(input, hin => Staged(output, hout =>
            Call("MPI_Reduce_scatter_block", () => MPI_Reduce_scatter_block(Ptr(hin), Ptr(hout), (int)hout.numel(), Type(hin), _sum, _world)), copyIn: false));
    }

    public void AllGather(Tensor input, Tensor output)
    {
        _sent.AllGather(output, WorldSize);
        Staged(input, hin => Staged(output, hout =>
            Call("MPI_Allgather", () => MPI_Allgather(Ptr(hin), (int)hin.numel(), Type(hin), Ptr(hout), (int)hin.numel(), Type(hin), _world)), copyIn: false));
    }

    public void Broadcast(Tensor t, int root)
    {
        _sent.Broadcast(t, WorldSize);
        Staged(t, host => Call("MPI_Bcast", () => MPI_Bcast(Ptr(host), (int)host.numel(), Type(host), root, _world)));
    }

    public void Barrier() => Call("MPI_Barrier", () => MPI_Barrier(_world));

    /// <summary>
    /// MPI_Ibarrier polled every millisecond: Open MPI's blocking calls busy-poll, which on a node whose cores the
    /// ranks' own worker threads fill (prepare) takes a core from a rank that is still working.
    /// </summary>
    public void IdleBarrier() => Call("MPI_Ibarrier", () =>
    {
        int rc = MPI_Ibarrier(_world, out var request);
        for (int done = 0; rc == 0 && done == 0;)
        {
            rc = MPI_Test(ref request, out done, IntPtr.Zero);
            if (rc == 0 && done == 0) Thread.Sleep(1);
        }
        return rc;
    });

    public ICommunicator Split(int color, int key, string group)
    {
        Check(MPI_Comm_split(_world, color, key, out var comm), "MPI_Comm_split");
        return new MpiCommunicator(this, comm, group);
    }

    public void Send(Tensor t, int peer)
    {
        _sent.Send(t);
        Staged(t, host => Call("MPI_Send", () => MPI_Send(Ptr(host), Count(host), Type(host), peer, Tag, _world)));
    }

    public void Recv(Tensor t, int peer) => Staged(t, host =>
        Call("MPI_Recv", () => MPI_Recv(Ptr(host), Count(host), Type(host), peer, Tag, _world, IntPtr.Zero)), copyIn: false);

    public void SendRecv(Tensor? send, int dest, Tensor? recv, int source)
    {
        if (send is null && recv is null) return;
        if (recv is null) { Send(send!, dest); return; }
        if (send is null) { Recv(recv, source); return; }
        _sent.Send(send);
        Staged(send, hs => Staged(recv, hr =>
            Call("MPI_Sendrecv", () => MPI_Sendrecv(Ptr(hs), Count(hs), Type(hs), dest, Tag, Ptr(hr), Count(hr), Type(hr), source, Tag, _world, IntPtr.Zero)), copyIn: false));
    }

    public unsafe void AllToAll(Tensor input, long[] sendCounts, Tensor output, long[] recvCounts)
    {
        if (sendCounts.Length != WorldSize || recvCounts.Length != WorldSize)
            throw new ArgumentException($"all-to-all: {sendCounts.Length} send and {recvCounts.Length} receive counts, expected {WorldSize} each");
        int[] sc = Ints(sendCounts), rc = Ints(recvCounts), sd = Displacements(sc), rd = Displacements(rc);
        _sent.AllToAll(input, sendCounts, Rank);
        Staged(input, hin => Staged(output, hout =>
        {
            fixed (int* psc = sc, psd = sd, prc = rc, prd = rd)
            {
                IntPtr a = (IntPtr)psc, b = (IntPtr)psd, c = (IntPtr)prc, d = (IntPtr)prd;
                Call("MPI_Alltoallv", () => MPI_Alltoallv(Ptr(hin), a, b, Type(hin), Ptr(hout), c, d, Type(hout), _world));
            }
        }, copyIn: false));
    }

    const int Tag = 0;   // one message stream per pair: MPI keeps messages between two ranks in order

    static int Count(Tensor t) => checked((int)t.numel());
    static int[] Ints(long[] counts) => [.. counts.Select(c => checked((int)c))];

    /// <summary>Runs <paramref name="op"/> on a contiguous CPU tensor holding <paramref name="t"/>'s data, then copies results back.</summary>
    static void Staged(Tensor t, Action<Tensor> op, bool copyIn = true) => Staging.Run(t, CPU, op, copyIn);

    /// <summary>One blocking MPI call, timed.</summary>
    void Call(string name, Func<int> call)
    {
        long start = Stopwatch.GetTimestamp();
        int rc = call();
        Interlocked.Add(ref _commTicks, Stopwatch.GetTimestamp() - start);
        Check(rc, name);
    }

    static IntPtr Ptr(Tensor t) => LibTorchLoader.DataPtr(t);
    IntPtr Type(Tensor t) => _types.TryGetValue(t.dtype, out var h) ? h : throw new NotSupportedException($"MPI collective on {t.dtype}");
    static readonly IntPtr InPlace = 1;

    static void Check(int rc, string call)
    {
        if (rc != 0) throw new InvalidOperationException($"{call} failed with MPI error {rc}");
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        MPI_Finalized(out int done);
        if (_isSplit)
        {
            var comm = _world;
            if (done == 0) MPI_Comm_free(ref comm);
            return;
        }
        if (done == 0) MPI_Finalize();
    }

    public byte[][] AllToAllBytes(byte[][] send)
    {
        if (send.Length != WorldSize) throw new ArgumentException($"send holds {send.Length} buffers, expected one per rank ({WorldSize})");
        var sendCounts = send.Select(b => b.Length).ToArray();
        if (sendCounts.Sum(c => (long)c) > int.MaxValue) throw new InvalidOperationException("MPI_Alltoallv: over 2 GiB to send in one call");
        var sendFlat = new byte[sendCounts.Sum()]; // block copies: SelectMany enumerated byte by byte (~1 s per 100 MB)
        for (int d = 0, at = 0; d < send.Length; at += send[d].Length, d++) Buffer.BlockCopy(send[d], 0, sendFlat, at, send[d].Length);
        var recvFlat = AllToAllFlat(sendFlat, sendCounts, out var recvCounts);
        return Split(recvFlat, recvCounts, Displacements(recvCounts));
    }

    public byte[] AllToAllFlat(ReadOnlySpan<byte> send, int[] sendCounts) => AllToAllFlat(send, sendCounts, out _);

    unsafe byte[] AllToAllFlat(ReadOnlySpan<byte> send, int[] sendCounts, out int[] recvCounts)
    {
        if (sendCounts.Length != WorldSize) throw new ArgumentException($"{sendCounts.Length} send counts, expected one per rank ({WorldSize})");
        if (sendCounts.Sum(c => (long)c) != send.Length) throw new ArgumentException($"send counts add up to {sendCounts.Sum(c => (long)c)} bytes, the buffer holds {send.Length}");
        recvCounts = new int[WorldSize];
        fixed (int* sc = sendCounts, rc = recvCounts)
            Check(MPI_Alltoall((IntPtr)sc, 1, Handle("ompi_mpi_int"), (IntPtr)rc, 1, Handle("ompi_mpi_int"), _world), "MPI_Alltoall");
        if (recvCounts.Sum(c => (long)c) > int.MaxValue) throw new InvalidOperationException("MPI_Alltoallv: over 2 GiB to receive in one call");
        var recvFlat = new byte[recvCounts.Sum()];
        var sendDispls = Displacements(sendCounts);
        var recvDispls = Displacements(recvCounts);
        fixed (byte* sb = send, rb = recvFlat)
        fixed (int* sc = sendCounts, sd = sendDispls, rc = recvCounts, rd = recvDispls)
            Check(MPI_Alltoallv((IntPtr)sb, (IntPtr)sc, (IntPtr)sd, Handle("ompi_mpi_byte"), (IntPtr)rb, (IntPtr)rc, (IntPtr)rd, Handle("ompi_mpi_byte"), _world), "MPI_Alltoallv");
        return recvFlat;
    }

    public unsafe byte[][] AllGatherBytes(byte[] send)
    {
        var counts = new int[WorldSize];
        int mine = send.Length;
        fixed (int* rc = counts)
            Check(MPI_Allgather((IntPtr)(&mine), 1, Handle("ompi_mpi_int"), (IntPtr)rc, 1, Handle("ompi_mpi_int"), _world), "MPI_Allgather");
        if (counts.Sum(c => (long)c) > int.MaxValue) throw new InvalidOperationException("MPI_Allgatherv: over 2 GiB to receive in one call");
        var displs = Displacements(counts);
        var recv = new byte[counts.Sum()];
        fixed (byte* sb = send, rb = recv)
        fixed (int* rc = counts, rd = displs)
            Check(MPI_Allgatherv((IntPtr)sb, mine, Handle("ompi_mpi_byte"), (IntPtr)rb, (IntPtr)rc, (IntPtr)rd, Handle("ompi_mpi_byte"), _world), "MPI_Allgatherv");
        return Split(recv, counts, displs);
    }

    static int[] Displacements(int[] counts)
    {
        var d = new int[counts.Length];
        for (int i = 1; i < counts.Length; i++) d[i] = d[i - 1] + counts[i - 1];
        return d;
    }

    static byte[][] Split(byte[] flat, int[] counts, int[] displs) =>
        [.. counts.Select((c, i) => flat.AsSpan(displs[i], c).ToArray())];

    /// <summary>Address of an exported Open MPI handle (datatype, op, communicator).</summary>
    static IntPtr Handle(string symbol) => NativeLibrary.GetExport(NativeLibrary.Load(Lib), symbol);

    [DllImport(Lib)] static extern int MPI_Alltoall(IntPtr send, int sendCount, IntPtr sendType, IntPtr recv, int recvCount, IntPtr recvType, IntPtr comm);
    [DllImport(Lib)] static extern int MPI_Alltoallv(IntPtr send, IntPtr sendCounts, IntPtr sendDispls, IntPtr sendType, IntPtr recv, IntPtr recvCounts, IntPtr recvDispls, IntPtr recvType, IntPtr comm);
    [DllImport(Lib)] static extern int MPI_Allgatherv(IntPtr send, int sendCount, IntPtr sendType, IntPtr recv, IntPtr recvCounts, IntPtr displs, IntPtr recvType, IntPtr comm);
    [DllImport(Lib)] static extern int MPI_Init(IntPtr argc, IntPtr argv);
    [DllImport(Lib)] static extern int MPI_Initialized(out int flag);
    [DllImport(Lib)] static extern int MPI_Finalized(out int flag);
    [DllImport(Lib)] static extern int MPI_Finalize();
    [DllImport(Lib)] static extern int MPI_Comm_rank(IntPtr comm, out int rank);
    [DllImport(Lib)] static extern int MPI_Comm_size(IntPtr comm, out int size);
    [DllImport(Lib)] static extern int MPI_Allreduce(IntPtr send, IntPtr recv, int count, IntPtr type, IntPtr op, IntPtr comm);
    [DllImport(Lib)] static extern int MPI_Reduce_scatter_block(IntPtr send, IntPtr recv, int count, IntPtr type, IntPtr op, IntPtr comm);
    [DllImport(Lib)] static extern int MPI_Allgather(IntPtr send, int sendCount, IntPtr sendType, IntPtr recv, int recvCount, IntPtr recvType, IntPtr comm);
    [DllImport(Lib)] static extern int MPI_Bcast(IntPtr buffer, int count, IntPtr type, int root, IntPtr comm);
    [DllImport(Lib)] static extern int MPI_Barrier(IntPtr comm);
    [DllImport(Lib)] static extern int MPI_Ibarrier(IntPtr comm, out IntPtr request);
    [DllImport(Lib)] static extern int MPI_Test(ref IntPtr request, out int flag, IntPtr status);
    [DllImport(Lib)] static extern int MPI_Comm_split(IntPtr comm, int color, int key, out IntPtr newComm);
    [DllImport(Lib)] static extern int MPI_Comm_free(ref IntPtr comm);
    [DllImport(Lib)] static extern int MPI_Send(IntPtr buf, int count, IntPtr type, int dest, int tag, IntPtr comm);
    [DllImport(Lib)] static extern int MPI_Recv(IntPtr buf, int count, IntPtr type, int source, int tag, IntPtr comm, IntPtr status);
    [DllImport(Lib)] static extern int MPI_Sendrecv(IntPtr send, int sendCount, IntPtr sendType, int dest, int sendTag, IntPtr recv, int recvCount, IntPtr recvType, int source, int recvTag, IntPtr comm, IntPtr status);
}
