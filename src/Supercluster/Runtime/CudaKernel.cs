using System.Runtime.InteropServices;
using System.Text;

namespace Supercluster.Runtime;

/// <summary>
/// One CUDA kernel compiled at run time (NVRTC → PTX → driver) and launched through the driver API by P/Invoke, on the
/// legacy default stream: the stream libtorch uses when nobody sets another (TorchSharp 0.107 cannot), so the launch is
/// ordered after the torch ops that produced its inputs and before those that read its outputs, with no host sync.
/// </summary>
public sealed unsafe class CudaKernel
{
    readonly IntPtr _function;
    readonly int _device;

    CudaKernel(IntPtr function, int device) { _function = function; _device = device; }

    /// <summary>Compiles <paramref name="source"/> for device <paramref name="device"/>'s architecture and loads <paramref name="entry"/>.</summary>
    /// <exception cref="InvalidOperationException">No NVRTC, a compile error, or a driver too old for the PTX (the message says which).</exception>
    public static CudaKernel Compile(string source, string entry, int device)
    {
        var info = CudaDriver.Devices().FirstOrDefault(d => d.Index == device)
            ?? throw new InvalidOperationException($"CUDA device {device} not found by the driver");
        string ptx = Nvrtc.CompileToPtx(source, entry + ".cu", $"compute_{info.Major}{info.Minor}");
        CudaDriver.MakeCurrent(device);
        IntPtr module;
        int rc;
        fixed (byte* image = Encoding.ASCII.GetBytes(ptx + "\0")) rc = cuModuleLoadData(&module, image);
        if (rc != 0)
            throw new InvalidOperationException($"the CUDA driver cannot load the PTX of {entry} (error {rc}{(rc == 222 ? ": the driver is older than NVRTC " + Nvrtc.Describe() : "")})");
        IntPtr fn;
        fixed (byte* name = Encoding.ASCII.GetBytes(entry + "\0")) rc = cuModuleGetFunction(&fn, module, name);
        if (rc != 0) throw new InvalidOperationException($"cuModuleGetFunction({entry}) failed with error {rc}");
        return new CudaKernel(fn, device);
    }

    /// <summary>Launches a 1-D grid. <paramref name="args"/> points at each argument's value, in the kernel's order.</summary>
    public void Launch(long blocks, int threadsPerBlock, void** args)
    {
        CudaDriver.MakeCurrent(_device);
        int rc = cuLaunchKernel(_function, (uint)blocks, 1, 1, (uint)threadsPerBlock, 1, 1, 0, IntPtr.Zero, args, null);
        if (rc != 0) throw new InvalidOperationException($"cuLaunchKernel failed with CUDA error {rc}");
    }

    const string Lib = "libcuda.so.1";
    [DllImport(Lib)] static extern int cuModuleLoadData(IntPtr* module, byte* image);
    [DllImport(Lib)] static extern int cuModuleGetFunction(IntPtr* function, IntPtr module, byte* name);
    [DllImport(Lib)] static extern int cuLaunchKernel(IntPtr f, uint gx, uint gy, uint gz, uint bx, uint by, uint bz, uint sharedBytes, IntPtr stream, void** args, void** extra);
}
