using System.Runtime.InteropServices;
using TorchSharp;

namespace Supercluster.Runtime;

/// <summary>Facts about the machine as Supercluster sees it (for <c>env</c> and run logs).</summary>
public static class EnvironmentReport
{
    public static IReadOnlyList<(string Key, string Value)> Collect()
    {
        var r = LibTorchLoader.Report ?? throw new InvalidOperationException("libtorch not loaded");
        var rows = new List<(string, string)>
        {
            ("os", RuntimeInformation.OSDescription),
            (".net", RuntimeInformation.FrameworkDescription),
            ("torchsharp", typeof(torch).Assembly.GetName().Version?.ToString() ?? "?"),
            ("libtorch (built for)", torch.__version__),
            ("libtorch loaded from", $"{r.LibTorchDir} ({r.Source})"),
            ("libtorchsharp", r.LibTorchSharpPath + (r.Patched ? " (GLIBCXX_3.4.32 marker relaxed)" : "")),
            ("cpu threads", $"{torch.get_num_threads()} (of {Environment.ProcessorCount} logical cores)"),
        };
        bool cuda = torch.cuda.is_available();
        rows.Add(("cuda available", cuda ? $"yes, {torch.cuda.device_count()} device(s)" : "no"));
        var devices = CudaDriver.Devices();
        foreach (var d in devices)
            rows.Add(($"cuda:{d.Index}", $"{d.Name}, {d.TotalBytes / (1L << 30)} GiB, compute capability {d.Major}.{d.Minor}"));
        // bf16 tensor cores need compute capability 8.0 (Ampere) or newer; on CPU libtorch computes bf16 in software.
        rows.Add(("bf16 supported", cuda
            ? (devices.Any(d => d.Major >= 8) ? "yes (tensor cores)" : "no (compute capability < 8.0)")
            : "cpu only (slow, for testing)"));
        rows.Add(("mpi (libmpi.so.40)", Probe("libmpi.so.40")));
        rows.Add(("nccl (libnccl.so.2)", Probe("libnccl.so.2")));
        rows.Add(("nvrtc (fused kernels)", Nvrtc.Describe()));
        return rows;
    }

    static string Probe(string lib)
    {
        if (!NativeLibrary.TryLoad(lib, out var h)) return "not found";
        NativeLibrary.Free(h);
        return "found";
    }
}
