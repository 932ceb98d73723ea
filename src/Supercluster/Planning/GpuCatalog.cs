namespace Supercluster.Planning;

/// <summary>Numeric precision of the matrix multiplies; selects the peak the planner divides by.</summary>
public enum Precision { Bf16, Fp16, Fp8 }

/// <summary>
/// One accelerator. Peaks are dense (no 2:4 sparsity) tensor-core TFLOP/s; memory in GB (10^9 bytes, as marketed);
/// NVLink bandwidth is per GPU per direction (half the "bidirectional" figure in data sheets).
/// A peak of 0 means the GPU lacks that precision.
/// </summary>
public sealed record GpuSpec(string Name, double Bf16Tflops, double Fp16Tflops, double Fp8Tflops, double MemoryGB,
    double MemoryBandwidthGBs, double NvlinkGBs, double TdpWatts, string Source)
{
    public double PeakTflops(Precision p) => p switch
    {
        Precision.Bf16 => Bf16Tflops,
        Precision.Fp16 => Fp16Tflops,
        _ => Fp8Tflops,
    };
}

/// <summary>NVIDIA data-sheet figures for the GPUs people plan with.</summary>
public static class GpuCatalog
{
    public static readonly IReadOnlyList<GpuSpec> All =
    [
        new("V100", 0, 125, 0, 32, 900, 150, 300, "NVIDIA V100 SXM2 data sheet (NVLink 2: 300 GB/s bidirectional)"),
        new("A100-40GB", 312, 312, 0, 40, 1555, 300, 400, "NVIDIA A100 SXM data sheet (NVLink 3: 600 GB/s)"),
        new("A100-80GB", 312, 312, 0, 80, 2039, 300, 400, "NVIDIA A100 SXM data sheet (NVLink 3: 600 GB/s)"),
        new("H100-SXM", 989, 989, 1979, 80, 3350, 450, 700, "NVIDIA H100 SXM data sheet (NVLink 4: 900 GB/s)"),
        // PCIe card: GPUs in a node talk over PCIe Gen5 x16 (64 GB/s per direction) unless bridged in pairs.
        new("H100-PCIe", 756, 756, 1513, 80, 2000, 64, 350, "NVIDIA H100 PCIe data sheet (PCIe Gen5 x16)"),
        new("H200", 989, 989, 1979, 141, 4800, 450, 700, "NVIDIA H200 SXM data sheet (NVLink 4: 900 GB/s)"),
        new("B200", 2250, 2250, 4500, 180, 8000, 900, 1000, "NVIDIA HGX B200 data sheet (NVLink 5: 1.8 TB/s)"),
        // No NVLink: GPUs talk over PCIe Gen4 x16 (32 GB/s per direction).
        new("L4", 121, 121, 242, 24, 300, 32, 72, "NVIDIA L4 data sheet (PCIe Gen4 x16)"),
    ];

    /// <summary>
    /// The catalog entry for a CUDA device name as the driver reports it ("NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-40GB"),
    /// or null; train and bench take their MFU peak from it.
    /// </summary>
    public static GpuSpec? ForDeviceName(string name) => name switch
    {
        _ when name.Contains("H100") && name.Contains("PCIe") => Get("H100-PCIe"),
        _ when name.Contains("H100") => Get("H100-SXM"),
        _ when name.Contains("H200") => Get("H200"),
        _ when name.Contains("B200") => Get("B200"),
        _ when name.Contains("A100") => Get(name.Contains("40GB") ? "A100-40GB" : "A100-80GB"),
        _ when name.Contains("V100") => Get("V100"),
        _ when name.Contains("L4") => Get("L4"),
        _ => null,
    };

    public static GpuSpec Get(string name) =>
        All.FirstOrDefault(g => string.Equals(g.Name, name, StringComparison.OrdinalIgnoreCase)
                                || string.Equals(g.Name.Replace("-", ""), name.Replace("-", ""), StringComparison.OrdinalIgnoreCase))
        ?? throw new BadInputException($"--gpu '{name}' is unknown: expected one of {string.Join(", ", All.Select(g => g.Name))}");
}
