using System.Reflection;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using TorchSharp;

namespace Supercluster.Runtime;

/// <summary>
/// Loads libtorch and TorchSharp's native shim before TorchSharp's own probing runs, so that
/// (1) a PyTorch <c>torch/lib</c> folder (CUDA) can replace the CPU package, and
/// (2) the GLIBCXX_3.4.32 marker requirement of libLibTorchSharp.so is relaxed on older libstdc++.
/// TorchSharp's probing is then skipped: a second libtorch_cpu.so in one process would crash.
/// </summary>
public static class LibTorchLoader
{
    /// <summary>Environment variable naming a libtorch folder, e.g. PyTorch's <c>site-packages/torch/lib</c>.</summary>
    public const string EnvVar = "SUPERCLUSTER_LIBTORCH";
    const string MarkerVersion = "GLIBCXX_3.4.32";

    static readonly object Gate = new();

    /// <summary>What was loaded, from where; null until <see cref="EnsureLoaded"/> succeeds.</summary>
    public static LoadReport? Report { get; private set; }

    public sealed record LoadReport(string LibTorchDir, string LibTorchSharpPath, bool Patched, bool CudaLibrariesLoaded, string Source);

    /// <summary>Loads the native libraries once. <paramref name="libtorchDir"/> overrides <see cref="EnvVar"/>.</summary>
    public static LoadReport EnsureLoaded(string? libtorchDir = null, Action<string>? verbose = null)
    {
        lock (Gate)
        {
            if (Report is not null) return Report;
            if (!OperatingSystem.IsLinux())
            {
                // Other platforms: TorchSharp's own probing is right there.
                torch.InitializeDeviceType(DeviceType.CPU);
                return Report = new LoadReport("(TorchSharp default)", "(TorchSharp default)", false, false, "TorchSharp");
            }

            string source = Source(libtorchDir);
            string dir = ResolveLibTorchDir(libtorchDir);

            // Load libtorch first: libLibTorchSharp's NEEDED entries (libtorch.so, libc10.so, libtorch_cpu.so)
            // then bind to these by soname instead of to any copy beside the shim.
            Dlopen(Path.Combine(dir, "libtorch.so"));
            bool cuda = false;
            if (File.Exists(Path.Combine(dir, "libtorch_cuda.so")))
            {
                Dlopen(Path.Combine(dir, "libtorch_cuda.so"));
                cuda = true;
            }

            string shim = FindPackagedNativeDir("libLibTorchSharp.so") is var sd ? Path.Combine(sd, "libLibTorchSharp.so") : "";
            bool patched = false;
            if (!TryLoad(shim, out IntPtr handle, out string err))
            {
                if (!err.Contains(MarkerVersion, StringComparison.Ordinal))
                    throw new InvalidOperationException($"cannot load {shim}: {err}");
                shim = PatchedCopy(shim);
                patched = true;
                verbose?.Invoke($"libstdc++ lacks {MarkerVersion}: loading a copy of libLibTorchSharp.so with that marker requirement marked weak ({shim})");
                handle = Dlopen(shim);
            }

            _tensorData = NativeLibrary.GetExport(handle, "THSTensor_data");
            _storageData = NativeLibrary.GetExport(handle, "THSStorage_data_ptr");
            _storageBytes = NativeLibrary.GetExport(handle, "THSStorage_nbytes");
            NativeLibrary.SetDllImportResolver(typeof(torch).Assembly,
                (name, _, _) => name == "LibTorchSharp" ? handle : IntPtr.Zero);
            MarkTorchSharpBackendLoaded();
            verbose?.Invoke($"libtorch loaded from {dir}{(cuda ? " (with CUDA)" : "")}");
            return Report = new LoadReport(dir, shim, patched, cuda, source);
        }
    }

    static string Source(string? explicitDir) =>
        explicitDir is not null ? "--libtorch" : Environment.GetEnvironmentVariable(EnvVar) is { Length: > 0 } ? EnvVar : "package";

    /// <summary>The libtorch folder to use: <paramref name="explicitDir"/>, else $SUPERCLUSTER_LIBTORCH, else the CPU package's.</summary>
    public static string ResolveLibTorchDir(string? explicitDir)
    {
        string? chosen = explicitDir ?? (Environment.GetEnvironmentVariable(EnvVar) is { Length: > 0 } env ? env : null);
        string dir = chosen is null ? FindPackagedNativeDir("libtorch.so") : Path.GetFullPath(chosen);
        if (!File.Exists(Path.Combine(dir, "libtorch.so")))
            throw new BadInputException($"{Source(explicitDir)}: '{dir}' has no libtorch.so (expected a libtorch 'lib' folder such as <python>/site-packages/torch/lib)");
        return dir;
    }

    static IntPtr _tensorData;

    /// <summary>Address of a tensor's first element (host or device memory), for handing buffers to MPI/NCCL. TorchSharp 0.107 has no public data_ptr.</summary>
    public static unsafe IntPtr DataPtr(torch.Tensor t)
    {
        if (_tensorData == IntPtr.Zero) throw new InvalidOperationException("libtorch not loaded");
        return ((delegate* unmanaged<IntPtr, IntPtr>)_tensorData)(t.Handle);
    }

    static IntPtr _storageData, _storageBytes;

    /// <summary>The allocation a tensor lives in (its storage: address and bytes), so memory can be measured, not computed: views share one.</summary>
    public static unsafe (IntPtr Address, long Bytes) Storage(torch.Tensor t)
    {
        if (_storageData == IntPtr.Zero) throw new InvalidOperationException("libtorch not loaded");
        return (((delegate* unmanaged<IntPtr, IntPtr>)_storageData)(t.Handle), (long)((delegate* unmanaged<IntPtr, ulong>)_storageBytes)(t.Handle));
    }

    /// <summary>Where the NuGet packages' native files sit for this app: runtimes/linux-x64/native in a build, the app folder when published.</summary>
    static string FindPackagedNativeDir(string file)
    {
        var candidates = new[]
        {
            Path.Combine(AppContext.BaseDirectory, "runtimes", "linux-x64", "native"),
            AppContext.BaseDirectory,
            Path.GetDirectoryName(typeof(torch).Assembly.Location) ?? AppContext.BaseDirectory,
        };
        foreach (var c in candidates)
            if (File.Exists(Path.Combine(c, file))) return c;
        throw new InvalidOperationException($"{file} not found next to the application (looked in {string.Join(", ", candidates)}); rebuild, or restore the TorchSharp and libtorch-cpu-linux-x64 packages");
    }

    /// <summary>Writes (once, atomically) a copy of the shim with the marker requirement weak, in a cache keyed by the original's hash.</summary>
    static string PatchedCopy(string original)
    {
        byte[] bytes = File.ReadAllBytes(original);
        string hash = Convert.ToHexString(SHA256.HashData(bytes))[..16].ToLowerInvariant();
        string cacheRoot = Environment.GetEnvironmentVariable("XDG_CACHE_HOME") is { Length: > 0 } x ? x
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache");
        string dir = Path.Combine(cacheRoot, "supercluster", "libtorchsharp-" + hash);
        string target = Path.Combine(dir, "libLibTorchSharp.so");
        if (File.Exists(target)) return target;

        if (ElfVersionPatcher.MarkWeak(bytes, MarkerVersion) == 0)
            throw new InvalidOperationException($"{original}: no {MarkerVersion} requirement to relax, yet it failed to load");
        Directory.CreateDirectory(dir);
        string tmp = target + "." + Environment.ProcessId + ".tmp";
        using (var f = new FileStream(tmp, FileMode.Create, FileAccess.Write))
        {
            f.Write(bytes);
            f.Flush(true);
        }
        File.Move(tmp, target, overwrite: true); // several ranks may race here; each writes identical bytes
        return target;
    }

    static void MarkTorchSharpBackendLoaded()
    {
        foreach (var name in new[] { "nativeBackendLoaded", "nativeBackendCudaLoaded" })
        {
            var field = typeof(torch).GetField(name, BindingFlags.Static | BindingFlags.NonPublic)
                ?? throw new InvalidOperationException($"TorchSharp {typeof(torch).Assembly.GetName().Version} has no field torch.{name}; this loader supports TorchSharp 0.107");
            field.SetValue(null, true);
        }
    }

    static IntPtr Dlopen(string path) =>
        TryLoad(path, out var h, out var err) ? h : throw new InvalidOperationException($"cannot load {path}: {err}");

    static bool TryLoad(string path, out IntPtr handle, out string error)
    {
        // NativeLibrary.Load's exception carries the loader's own message (dlerror), which names a missing version.
        try { handle = NativeLibrary.Load(path); error = ""; return true; }
        catch (DllNotFoundException e) { handle = IntPtr.Zero; error = e.Message; return false; }
    }
}
