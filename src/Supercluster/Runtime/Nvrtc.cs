using System.Runtime.InteropServices;
using System.Text;

namespace Supercluster.Runtime;

/// <summary>
/// NVRTC, CUDA's runtime compiler: CUDA C source → PTX, which the driver then compiles for the GPU in use. Found at run
/// time (no build-time CUDA): $SUPERCLUSTER_NVRTC, then the NVRTC that ships with the PyTorch whose libtorch is loaded
/// (pip's <c>nvidia/*/lib</c> beside <c>torch/lib</c>), then a CUDA toolkit, then the loader's search path. Absent →
/// <see cref="Available"/> is false with the reason, and callers use their torch fallback.
/// </summary>
public static unsafe class Nvrtc
{
    public const string EnvVar = "SUPERCLUSTER_NVRTC";
    static readonly object Gate = new();
    static bool _probed;
    static string? _path, _whyNot;
    static delegate* unmanaged<int*, int*, int> _version;
    static delegate* unmanaged<IntPtr*, byte*, byte*, int, byte**, byte**, int> _create;
    static delegate* unmanaged<IntPtr, int, byte**, int> _compile;
    static delegate* unmanaged<IntPtr, nuint*, int> _logSize, _ptxSize;
    static delegate* unmanaged<IntPtr, byte*, int> _log, _ptx;
    static delegate* unmanaged<IntPtr*, int> _destroy;

    /// <summary>True when a usable libnvrtc was loaded.</summary>
    public static bool Available { get { Probe(); return _path is not null; } }

    /// <summary>The library loaded and its version ("libnvrtc.so.12 (12.8)"), or why none was.</summary>
    public static string Describe()
    {
        Probe();
        if (_path is null) return $"NVRTC not found ({_whyNot})";
        int major, minor;
        _version(&major, &minor);
        return $"{_path} (NVRTC {major}.{minor})";
    }

    /// <summary>Compiles <paramref name="source"/> for a virtual architecture such as compute_90; returns the PTX text.</summary>
    /// <exception cref="InvalidOperationException">NVRTC missing, or the source does not compile (the message holds NVRTC's log).</exception>
    public static string CompileToPtx(string source, string name, string virtualArch, params string[] options)
    {
        if (!Available) throw new InvalidOperationException(Describe());
        var all = new[] { $"--gpu-architecture={virtualArch}" }.Concat(options).ToArray();
        IntPtr prog;
        fixed (byte* src = Z(source), nm = Z(name))
            Check(_create(&prog, src, nm, 0, null, null), "nvrtcCreateProgram");
        try
        {
            var handles = all.Select(o => GCHandle.Alloc(Z(o), GCHandleType.Pinned)).ToArray();
            int rc;
            try
            {
                var ptrs = stackalloc byte*[handles.Length];
                for (int i = 0; i < handles.Length; i++) ptrs[i] = (byte*)handles[i].AddrOfPinnedObject();
                rc = _compile(prog, handles.Length, ptrs);
            }
            finally { foreach (var h in handles) h.Free(); }
            if (rc != 0) throw new InvalidOperationException($"NVRTC could not compile {name} ({string.Join(' ', all)}):\n{ProgramText(prog, _logSize, _log)}");
            return ProgramText(prog, _ptxSize, _ptx);
        }
        finally { _destroy(&prog); }
    }

    static string ProgramText(IntPtr prog, delegate* unmanaged<IntPtr, nuint*, int> size, delegate* unmanaged<IntPtr, byte*, int> get)
    {
        nuint n;
        Check(size(prog, &n), "nvrtcGet*Size");
        var buf = new byte[(int)n];
        fixed (byte* b = buf) Check(get(prog, b), "nvrtcGet*");
        return Encoding.UTF8.GetString(buf).TrimEnd('\0');
    }

    static void Check(int rc, string what)
    {
        if (rc != 0) throw new InvalidOperationException($"{what} failed with NVRTC error {rc}");
    }

    static byte[] Z(string s) => Encoding.UTF8.GetBytes(s + "\0");

    static void Probe()
    {
        lock (Gate)
        {
            if (_probed) return;
            _probed = true;
            var tried = new List<string>();
            foreach (var candidate in Candidates())
            {
                tried.Add(candidate);
                // Debian's and the toolkit's libnvrtc open libnvrtc-builtins by soname; preloading it from the same
                // folder lets an unpacked copy (not on the loader path) work too.
                string? dir = Path.GetDirectoryName(candidate);
                if (!string.IsNullOrEmpty(dir) && Directory.Exists(dir))
                    foreach (var b in Directory.GetFiles(dir, "libnvrtc-builtins*.so*").Order()) NativeLibrary.TryLoad(b, out _);
                if (!NativeLibrary.TryLoad(candidate, out var h)) continue;
                if (!NativeLibrary.TryGetExport(h, "nvrtcCompileProgram", out var compile)) continue;
                _version = (delegate* unmanaged<int*, int*, int>)NativeLibrary.GetExport(h, "nvrtcVersion");
                _create = (delegate* unmanaged<IntPtr*, byte*, byte*, int, byte**, byte**, int>)NativeLibrary.GetExport(h, "nvrtcCreateProgram");
                _compile = (delegate* unmanaged<IntPtr, int, byte**, int>)compile;
                _logSize = (delegate* unmanaged<IntPtr, nuint*, int>)NativeLibrary.GetExport(h, "nvrtcGetProgramLogSize");
                _log = (delegate* unmanaged<IntPtr, byte*, int>)NativeLibrary.GetExport(h, "nvrtcGetProgramLog");
                _ptxSize = (delegate* unmanaged<IntPtr, nuint*, int>)NativeLibrary.GetExport(h, "nvrtcGetPTXSize");
                _ptx = (delegate* unmanaged<IntPtr, byte*, int>)NativeLibrary.GetExport(h, "nvrtcGetPTX");
                _destroy = (delegate* unmanaged<IntPtr*, int>)NativeLibrary.GetExport(h, "nvrtcDestroyProgram");
                _path = candidate;
                return;
            }
            _whyNot = $"tried {string.Join(", ", tried)}; set {EnvVar} to a libnvrtc.so";
        }
    }

    static IEnumerable<string> Candidates()
    {
        if (Environment.GetEnvironmentVariable(EnvVar) is { Length: > 0 } env)
        {
            // An explicit choice is the only one tried: a wrong path should say so, not fall through to another NVRTC.
            yield return Directory.Exists(env) ? Directory.GetFiles(env, "libnvrtc.so*").Order().FirstOrDefault() ?? Path.Combine(env, "libnvrtc.so") : env;
            yield break;
        }
        string? torchLib = LibTorchLoader.Report?.LibTorchDir ?? Environment.GetEnvironmentVariable(LibTorchLoader.EnvVar);
        if (torchLib is { Length: > 0 } && Directory.Exists(torchLib))
        {
            foreach (var f in Directory.GetFiles(torchLib, "libnvrtc*.so*").Where(f => !f.Contains("builtins")).Order()) yield return f;
            string nvidia = Path.GetFullPath(Path.Combine(torchLib, "..", "..", "nvidia"));   // site-packages/nvidia/<pkg>/lib
            if (Directory.Exists(nvidia))
                foreach (var f in Directory.EnumerateFiles(nvidia, "libnvrtc.so*", SearchOption.AllDirectories).OrderDescending()) yield return f;
        }
        foreach (var home in new[] { Environment.GetEnvironmentVariable("CUDA_HOME"), Environment.GetEnvironmentVariable("CUDA_PATH"), "/usr/local/cuda" })
            if (home is { Length: > 0 } && Directory.Exists(Path.Combine(home, "lib64")))
                foreach (var f in Directory.GetFiles(Path.Combine(home, "lib64"), "libnvrtc.so*").Where(f => !f.Contains("builtins")).Order()) yield return f;
        foreach (var soname in new[] { "libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so.11.2", "libnvrtc.so" }) yield return soname;
    }
}
