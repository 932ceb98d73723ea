namespace Supercluster.Planning;

/// <summary>
/// How Transformer Engine's userbuffers tensor-parallel overlap (<c>ub_tp_comm_overlap</c>, sequence parallelism) runs a
/// layer's GEMMs, which costs time the overlap does not hide (TE <c>CommOverlapBase</c> / <c>CommOverlapP2PBase</c>, methods
/// as TE's <c>initialize_ub</c> assigns them and the runs' YAMLs keep):
/// * Chunks. <c>ring_exchange</c> (all-gather side: <c>qkv_fprop</c>, <c>fc1_fprop</c>, and the row-parallel dgrads
///   <c>proj_dgrad</c>, <c>fc2_dgrad</c>) runs the GEMM as t GEMMs of T/t rows, one per ring step (t/2 of 2T/t with
///   <c>aggregate</c>); <c>pipeline</c> (reduce-scatter side: <c>proj_fprop</c>, <c>fc2_fprop</c>) as <c>num_splits</c> = 4
///   GEMMs of T/4 rows. Each chunk is its own cuBLAS call with its own last wave. <c>bulk</c> (the column-parallel dgrad and
///   wgrad) runs one GEMM beside its collective.
/// * SM margin. A <c>pipeline</c> overlap with <c>set_sm_margin</c> launches every chunk on <c>sm_count − num_sm</c> SMs
///   (<c>_math_sms</c>, cuBLASLt's SM-count target), leaving <c>num_sm</c> to the reduce-scatter kernel: the GEMM runs at
///   (SMs − num_sm)/SMs of the GPU's per-SM rate, its waves quantised on the SMs it keeps. 0 = no margin (TE before 2.0 sets
///   none by default).
/// The numbers are each run's <c>ub_tp_comm_overlap_cfg</c> (NVIDIA dgxc-benchmarking v25.02.01 YAMLs). The collectives
/// themselves stay under <see cref="ClusterSpec.CommSmShare"/> as before.
/// </summary>
public sealed record UserbufferOverlap(int ProjFpropSms, int Fc2FpropSms, bool Aggregate = false, int PipelineSplits = 4)
{
    /// <summary>GEMMs a ring-exchange overlap splits its GEMM into on <paramref name="tp"/> ranks.</summary>
    public int RingChunks(int tp) => Aggregate ? Math.Max(1, tp / 2) : tp;

    /// <summary>Seconds of an (m×k)·(k×n) GEMM run as <paramref name="chunks"/> GEMMs of m/chunks rows.</summary>
    public static double ChunkedGemmSeconds(GpuSpec g, Precision p, double m, double n, double k, int chunks, double batch = 1) =>
        chunks * ComputeModel.GemmSeconds(g, p, m / chunks, n, k, batch);

    /// <summary><paramref name="g"/> reduced to the SMs a GEMM keeps when <paramref name="reservedSms"/> run the collective:
    /// every tensor-core peak scales with the SM count (same clock), memory bandwidth does not.</summary>
    public static GpuSpec WithoutSms(GpuSpec g, int reservedSms)
    {
        if (reservedSms <= 0 || g.SmCount <= reservedSms) return g;
        double keep = (g.SmCount - reservedSms) / (double)g.SmCount;
        return g with
        {
            SmCount = g.SmCount - reservedSms,
            Bf16Tflops = g.Bf16Tflops * keep,
            Fp16Tflops = g.Fp16Tflops * keep,
            Fp8Tflops = g.Fp8Tflops * keep,
        };
    }
}
