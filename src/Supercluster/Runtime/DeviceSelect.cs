using TorchSharp;
using static TorchSharp.torch;

namespace Supercluster.Runtime;

/// <summary>Turns <c>--device auto|cpu|cuda[:N]</c> and <c>--dtype fp32|bf16</c> into torch values, with clear errors.</summary>
public static class DeviceSelect
{
    public static Device Resolve(string spec)
    {
        spec = spec.Trim().ToLowerInvariant();
        if (spec == "auto") return cuda.is_available() ? CUDA : CPU;
        if (spec == "cpu") return CPU;
        if (spec == "cuda" || spec.StartsWith("cuda:"))
        {
            if (!cuda.is_available())
                throw new BadInputException($"--device {spec}: CUDA is not available here (libtorch from {LibTorchLoader.Report?.LibTorchDir}); set {LibTorchLoader.EnvVar} or --libtorch to a CUDA libtorch such as <python>/site-packages/torch/lib");
            int index = spec == "cuda" ? 0 : int.TryParse(spec[5..], out var i) ? i : -1;
            if (index < 0 || index >= cuda.device_count())
                throw new BadInputException($"--device {spec}: expected cuda:0..cuda:{cuda.device_count() - 1}");
            return new Device(DeviceType.CUDA, index);
        }
        throw new BadInputException($"--device: unknown device '{spec}', expected auto, cpu or cuda[:N]");
    }

    public static ScalarType Dtype(string spec) => spec.Trim().ToLowerInvariant() switch
    {
        "fp32" or "float32" => ScalarType.Float32,
        "bf16" or "bfloat16" => ScalarType.BFloat16,
        _ => throw new BadInputException($"--dtype: unknown dtype '{spec}', expected fp32 or bf16"),
    };

    /// <summary>
    /// Dense peak FLOP/s of this GPU for MFU, from <see cref="Planning.GpuCatalog"/> (the table plan uses); null when
    /// unknown (CPU). fp32 matmuls run as TF32 on tensor cores, at half the bf16 rate on these parts.
    /// </summary>
    public static double? PeakFlops(Device device, ScalarType dtype)
    {
        if (device.type != DeviceType.CUDA) return null;
        var name = CudaDriver.Devices().FirstOrDefault(d => d.Index == device.index)?.Name ?? "";
        double? bf16 = Planning.GpuCatalog.ForDeviceName(name) is { Bf16Tflops: > 0 } gpu ? gpu.Bf16Tflops * 1e12 : null;   // V100: no bf16
        return dtype == ScalarType.BFloat16 ? bf16 : bf16 / 2;
    }
}
