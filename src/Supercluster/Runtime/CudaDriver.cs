using System.Runtime.InteropServices;
using System.Text;

namespace Supercluster.Runtime;

/// <summary>
/// Names and memory of CUDA devices via the driver API (libcuda.so.1), which TorchSharp 0.107 does not expose.
/// Returns nothing where no driver is installed.
/// </summary>
public static class CudaDriver
{
    public sealed record DeviceInfo(int Index, string Name, long TotalBytes, int Major, int Minor);

    public static IReadOnlyList<DeviceInfo> Devices()
    {
        if (!NativeLibrary.TryLoad("libcuda.so.1", out _)) return [];
        try
        {
            if (cuInit(0) != 0 || cuDeviceGetCount(out int n) != 0) return [];
            var list = new List<DeviceInfo>();
            for (int i = 0; i < n; i++)
            {
                if (cuDeviceGet(out int dev, i) != 0) continue;
                var name = new byte[256];
                cuDeviceGetName(name, name.Length, dev);
                cuDeviceTotalMem_v2(out nuint bytes, dev);
                cuDeviceGetAttribute(out int major, 75, dev); // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
                cuDeviceGetAttribute(out int minor, 76, dev); // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR
                list.Add(new DeviceInfo(i, Encoding.ASCII.GetString(name).TrimEnd('\0'), (long)bytes, major, minor));
            }
            return list;
        }
        catch (EntryPointNotFoundException) { return []; }
    }

    /// <summary>Makes device <paramref name="index"/>'s primary context current on this thread (what cudaSetDevice does), for NCCL.</summary>
    public static void MakeCurrent(int index)
    {
        IntPtr ctx;
        lock (PrimaryContexts)
            if (!PrimaryContexts.TryGetValue(index, out ctx))
            {
                // Retained once per process and device (the runtime that libtorch uses shares the same primary context).
                if (cuInit(0) != 0 || cuDeviceGet(out int dev, index) != 0 || cuDevicePrimaryCtxRetain(out ctx, dev) != 0)
                    throw new InvalidOperationException($"cannot bind CUDA device {index}");
                PrimaryContexts[index] = ctx;
            }
        if (cuCtxGetCurrent(out var current) == 0 && current == ctx) return;
        if (cuCtxSetCurrent(ctx) != 0) throw new InvalidOperationException($"cannot bind CUDA device {index}");
    }

    static readonly Dictionary<int, IntPtr> PrimaryContexts = new();

    /// <summary>Device memory in use (total − free, as the driver sees it: includes the caching allocator's reserve).</summary>
    public static long UsedBytes(int index)
    {
        MakeCurrent(index);
        return cuMemGetInfo_v2(out nuint free, out nuint total) == 0 ? (long)(total - free) : 0;
    }

    const string Lib = "libcuda.so.1";
    [DllImport(Lib)] static extern int cuMemGetInfo_v2(out nuint free, out nuint total);
    [DllImport(Lib)] static extern int cuDevicePrimaryCtxRetain(out IntPtr ctx, int dev);
    [DllImport(Lib)] static extern int cuCtxSetCurrent(IntPtr ctx);
    [DllImport(Lib)] static extern int cuCtxGetCurrent(out IntPtr ctx);
    [DllImport(Lib)] static extern int cuInit(uint flags);
    [DllImport(Lib)] static extern int cuDeviceGetCount(out int count);
    [DllImport(Lib)] static extern int cuDeviceGet(out int device, int ordinal);
    [DllImport(Lib)] static extern int cuDeviceGetName(byte[] name, int len, int dev);
    [DllImport(Lib)] static extern int cuDeviceTotalMem_v2(out nuint bytes, int dev);
    [DllImport(Lib)] static extern int cuDeviceGetAttribute(out int value, int attribute, int dev);
}
