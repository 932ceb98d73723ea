namespace Supercluster.Planning;

/// <summary>
/// The machine: how many GPUs, how they are grouped into nodes and how fast they talk.
/// Bandwidths are per GPU per direction in GB/s; the achievable fraction of line rate is applied by <see cref="Collectives"/>.
/// </summary>
public sealed record ClusterSpec(
    GpuSpec Gpu,
    int Gpus,
    int GpusPerNode = 8,
    double IntraNodeGBs = 0,          // 0: the GPU's NVLink figure
    double IntraNodeLatencyUs = 3,
    double InterNodeGBs = 50,         // 400 Gb/s RDMA NIC per GPU (ConnectX-7 / rail-optimized fabrics)
    double InterNodeLatencyUs = 10,
    double ComputeEfficiency = 0,     // 0: per-operation compute model; > 0: one achievable fraction of peak for every FLOP
    double NvlinkEfficiency = 0.8,
    double NetworkEfficiency = 0.9,
    double IntraNodeCommSmShare = 0.15,
    double InterNodeCommSmShare = 0.02)
{
    public double IntraBandwidthGBs => IntraNodeGBs > 0 ? IntraNodeGBs : Gpu.NvlinkGBs;

    /// <summary>Bandwidth (bytes/s, after efficiency) and per-hop latency (s) of a group spanning <paramref name="spanGpus"/> consecutive ranks.</summary>
    public (double BytesPerSecond, double LatencySeconds) Link(long spanGpus) => spanGpus <= GpusPerNode
        ? (IntraBandwidthGBs * 1e9 * NvlinkEfficiency, IntraNodeLatencyUs * 1e-6)
        : (InterNodeGBs * 1e9 * NetworkEfficiency, InterNodeLatencyUs * 1e-6);

    /// <summary>Share of the GPU's compute a collective on a group spanning <paramref name="spanGpus"/> ranks takes while it runs
    /// under compute: NCCL runs each channel as a thread block resident on an SM, and its copies and reductions share HBM
    /// bandwidth with the kernels beside it. Defaults: Calculon's A100 system (Isaev et al. 2023, <c>systems/a100_80g.json</c>,
    /// <c>processor_usage</c>: 0.15 on NVLink, 0.02 on the inter-node network); 0.15 ≈ 16 NCCL channels of 108 SMs.</summary>
    public double CommSmShare(long spanGpus) => spanGpus <= GpusPerNode ? IntraNodeCommSmShare : InterNodeCommSmShare;

    /// <summary>Share of the single-GPU kernel benchmarks' compute rate (GEMM, FlashAttention) a job of a node or more loses to
    /// its slowest GPU, which every synchronous step waits for. Bekman (ml-engineering, "Not all accelerators are created
    /// equal"): "5% and higher" MAMF spread between the GPUs of one 8-GPU node (silicon lottery, cooling position), and the
    /// ensemble runs at its slowest; a single-GPU benchmark sits mid-spread on average, so half the spread.</summary>
    public const double SlowestGpuShare = 0.025;

    /// <summary>The GPU that paces the job: the catalogue's GPU, its clock-bound rates lowered by <see cref="SlowestGpuShare"/>
    /// when the job fills a node or more (memory bandwidth left alone).</summary>
    public GpuSpec PacingGpu => Gpus >= GpusPerNode && GpusPerNode > 1
        ? Gpu with { GemmEfficiency = Gpu.GemmEfficiency * (1 - SlowestGpuShare), FlashAttentionTflops = Gpu.FlashAttentionTflops * (1 - SlowestGpuShare) }
        : Gpu;

    public void Validate()
    {
        if (Gpus <= 0) throw new BadInputException($"--gpus {Gpus} must be a positive integer");
        if (GpusPerNode <= 0) throw new BadInputException($"--gpus-per-node {GpusPerNode} must be a positive integer");
        if (InterNodeGBs <= 0) throw new BadInputException($"--inter-gbps {InterNodeGBs * 8} must be positive");
        if (IntraBandwidthGBs <= 0) throw new BadInputException($"--intra-gbs {IntraNodeGBs} must be positive");
        if (IntraNodeLatencyUs < 0 || InterNodeLatencyUs < 0) throw new BadInputException("--intra-latency-us/--inter-latency-us must not be negative");
        if (ComputeEfficiency != 0) Fraction(ComputeEfficiency, "--compute-efficiency");
        Fraction(NvlinkEfficiency, "--nvlink-efficiency"); Fraction(NetworkEfficiency, "--net-efficiency");
        if (!(IntraNodeCommSmShare >= 0 && IntraNodeCommSmShare < 1)) throw new BadInputException($"--intra-comm-sm-share {IntraNodeCommSmShare} must be a fraction in [0, 1)");
        if (!(InterNodeCommSmShare >= 0 && InterNodeCommSmShare < 1)) throw new BadInputException($"--inter-comm-sm-share {InterNodeCommSmShare} must be a fraction in [0, 1)");
    }

    internal static void Fraction(double v, string name)
    {
        if (!(v > 0 && v <= 1)) throw new BadInputException($"{name} {v} must be a fraction in (0, 1]");
    }
}
