namespace Supercluster.Planning;

/// <summary>Numeric precision of the matrix multiplies; selects the peak the planner divides by.</summary>
public enum Precision { Bf16, Fp16, Fp8 }

/// <summary>
/// One accelerator. Peaks are dense (no 2:4 sparsity) tensor-core TFLOP/s; memory in GB (10^9 bytes, as marketed);
/// NVLink bandwidth is per GPU per direction (half the "bidirectional" figure in data sheets).
/// A peak of 0 means the GPU lacks that precision.
/// What the per-operation compute model (<see cref="ComputeModel"/>) needs: streaming multiprocessors (tile/wave
/// quantisation), tensor-core clock and L2 (data sheets); the largest share of peak a cuBLAS GEMM reaches (published
/// "maximum achievable matmul FLOPS" benchmarks), FlashAttention's published forward+backward throughput, and the share of
/// HBM bandwidth a streaming kernel reaches; and the share of that best-shape rate a cuBLAS GEMM reaches at a transformer
/// layer's own shapes in published benchmarks (<see cref="LayerShapeGemmShare"/>: 1 where none is published). Sources in
/// docs/planning.md.
/// </summary>
public sealed record GpuSpec(string Name, double Bf16Tflops, double Fp16Tflops, double Fp8Tflops, double MemoryGB,
    double MemoryBandwidthGBs, double NvlinkGBs, double TdpWatts, string Source,
    int SmCount = 0, double ClockMHz = 0, double L2MB = 0,
    double GemmEfficiency = 0.8, double FlashAttentionTflops = 0, double MemoryEfficiency = 0.9, string KernelSource = "",
    double LayerShapeGemmShare = 1)
{
    /// <summary>Dense FLOP/s a GEMM of a layer's shape reaches before tile/wave quantisation: peak × the best-shape share (MAMF,
    /// the maximum over a search of thousands of shapes) × the share of it that benchmarks at layer shapes measured.</summary>
    public double GemmFlops(Precision p) => PeakTflops(p) * 1e12 * GemmEfficiency * LayerShapeGemmShare;

    /// <summary>Bytes/s a streaming (memory-bound) kernel reaches.</summary>
    public double StreamBytesPerSecond => MemoryBandwidthGBs * 1e9 * MemoryEfficiency;

    /// <summary>FlashAttention forward+backward FLOP/s in bf16/fp16 (FA convention: causal work counted, backward = 2.5 × forward);
    /// 0 = none published (attention then runs as batched GEMMs + softmax). FP8 runs keep attention in bf16 (Llama 3, TE).</summary>
    public double FlashAttentionFlops => FlashAttentionTflops * 1e12;

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
        // SMs, tensor clock, L2: NVIDIA architecture whitepapers (Volta, Ampere GA100, Hopper GH100, Blackwell).
        // GEMM efficiency: maximum achievable matmul FLOPS (Bekman, ml-engineering, "MAMF" table; bf16 cuBLAS):
        // A100 SXM 267.9/312 = 85.9%, H100 SXM 792.1/989 = 80.1%, H200 794.5/989 = 80.3%, B200 1745/2250 = 77.6%.
        // FlashAttention fwd+bwd (head dim 128, causal, seq 2k–8k): FA2 paper (Dao 2023) Fig. 4/6: ≈ 190 TFLOP/s on A100;
        // "up to 335 TFLOP/s" on H100 (FA2 §4.1). Streaming bandwidth: ≈ 90% of HBM (copy/STREAM-style kernels).
        // Layer-shape share: the mean of two published PyTorch/cuBLAS benchmarks, each against the planner's own rate for its
        // shapes (MAMF × wave × ramp). A100, fp16: 8192³ at 230 TFLOP/s (mli/transformers-benchmarks, A100 80GB) = 0.860 and a
        // GPT layer's four GEMMs, h 4096, 8192 tokens, at 244.5 (EleutherAI cookbook, Anthony et al. 2024's scripts) = 0.914:
        // 0.887. H100 SXM, bf16, square: cuBLAS 6144³/8192³ at 741.1/797.8 (pranjalssh/fast.cu README) = 0.990 and
        // torch.matmul 4096³/8192³/10240³ at 788.7/797.5/719.7 (zzc0721/torch-performance-test-data issue 79) = 0.945: 0.968.
        // B200/H200: none found (1, MAMF as published).
        new("V100", 0, 125, 0, 32, 900, 150, 300, "NVIDIA V100 SXM2 data sheet (NVLink 2: 300 GB/s bidirectional)",
            80, 1530, 6, 0.80, 0, 0.85, "no MAMF row published: 0.80 assumed; no FlashAttention for Volta"),
        new("A100-40GB", 312, 312, 0, 40, 1555, 300, 400, "NVIDIA A100 SXM data sheet (NVLink 3: 600 GB/s)",
            108, 1410, 40, 0.859, 190, 0.88, "MAMF A100 SXM 267.9/312; FA2 paper A100 fwd+bwd", 0.887),
        new("A100-80GB", 312, 312, 0, 80, 2039, 300, 400, "NVIDIA A100 SXM data sheet (NVLink 3: 600 GB/s)",
            108, 1410, 40, 0.859, 190, 0.88, "MAMF A100 SXM 267.9/312; FA2 paper A100 fwd+bwd", 0.887),
        new("H100-SXM", 989, 989, 1979, 80, 3350, 450, 700, "NVIDIA H100 SXM data sheet (NVLink 4: 900 GB/s)",
            132, 1830, 50, 0.801, 335, 0.90, "MAMF H100 SXM 792.1/989; FA2 paper H100 fwd+bwd", 0.968),
        // PCIe card: GPUs in a node talk over PCIe Gen5 x16 (64 GB/s per direction) unless bridged in pairs.
        new("H100-PCIe", 756, 756, 1513, 80, 2000, 64, 350, "NVIDIA H100 PCIe data sheet (PCIe Gen5 x16)",
            114, 1755, 50, 0.801, 256, 0.90, "H100 SXM's MAMF and layer-shape shares and FA2 share of peak (no PCIe row published)", 0.968),
        new("H200", 989, 989, 1979, 141, 4800, 450, 700, "NVIDIA H200 SXM data sheet (NVLink 4: 900 GB/s)",
            132, 1830, 50, 0.803, 335, 0.90, "MAMF H100/H200 SXM 794.5/989; FA2 on Hopper"),
        new("B200", 2250, 2250, 4500, 180, 8000, 900, 1000, "NVIDIA HGX B200 data sheet (NVLink 5: 1.8 TB/s)",
            148, 1965, 126, 0.776, 762, 0.90, "MAMF B200 1745/2250; FA: H100's FA2 share of peak (no B200 fwd+bwd row published)"),
        // No NVLink: GPUs talk over PCIe Gen4 x16 (32 GB/s per direction).
        new("L4", 121, 121, 242, 24, 300, 32, 72, "NVIDIA L4 data sheet (PCIe Gen4 x16)",
            58, 2040, 48, 0.80, 41, 0.85, "no MAMF or FA row published: 0.80 of peak and H100's FA2 share of peak (335/989) assumed"),
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
