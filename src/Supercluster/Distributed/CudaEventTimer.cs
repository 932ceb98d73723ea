using System.Runtime.InteropServices;
using Supercluster.Runtime;

namespace Supercluster.Distributed;

/// <summary>
/// GPU time of work enqueued on the default stream, from CUDA events recorded before and after it (driver API,
/// libcuda.so.1): a host clock around an asynchronous NCCL call measures only its enqueueing. Reading the total
/// waits for the recorded work to finish, so it is read once per step, when the step is logged.
/// </summary>
public sealed class CudaEventTimer(int device) : IDisposable
{
    readonly Stack<IntPtr> _free = new();
    readonly List<(IntPtr Start, IntPtr End)> _pending = [];

    /// <summary>Runs <paramref name="enqueue"/> between two events on the default stream (the one NCCL is given).</summary>
    public void Time(Action enqueue)
    {
        CudaDriver.MakeCurrent(device);
        var start = Take();
        var end = Take();
        Check(cuEventRecord(start, IntPtr.Zero), "cuEventRecord");
        enqueue();
        Check(cuEventRecord(end, IntPtr.Zero), "cuEventRecord");
        _pending.Add((start, end));
    }

    /// <summary>Seconds between each pair of events recorded since the last call, summed (waits for them).</summary>
    public double TakeSeconds()
    {
        if (_pending.Count == 0) return 0;
        CudaDriver.MakeCurrent(device);
        double ms = 0;
        foreach (var (start, end) in _pending)
        {
            Check(cuEventSynchronize(end), "cuEventSynchronize");
            Check(cuEventElapsedTime(out float e, start, end), "cuEventElapsedTime");
            ms += e;
            _free.Push(start);
            _free.Push(end);
        }
        _pending.Clear();
        return ms / 1000;
    }

    IntPtr Take()
    {
        if (_free.TryPop(out var e)) return e;
        Check(cuEventCreate(out e, 0), "cuEventCreate");     // CU_EVENT_DEFAULT: timing enabled
        return e;
    }

    static void Check(int rc, string call)
    {
        if (rc != 0) throw new InvalidOperationException($"{call} failed: CUDA driver error {rc}");
    }

    public void Dispose()
    {
        foreach (var (s, e) in _pending) { _free.Push(s); _free.Push(e); }
        _pending.Clear();
        while (_free.TryPop(out var e)) cuEventDestroy_v2(e);
    }

    const string Lib = "libcuda.so.1";
    [DllImport(Lib)] static extern int cuEventCreate(out IntPtr e, uint flags);
    [DllImport(Lib)] static extern int cuEventRecord(IntPtr e, IntPtr stream);
    [DllImport(Lib)] static extern int cuEventSynchronize(IntPtr e);
    [DllImport(Lib)] static extern int cuEventElapsedTime(out float ms, IntPtr start, IntPtr end);
    [DllImport(Lib)] static extern int cuEventDestroy_v2(IntPtr e);
}
