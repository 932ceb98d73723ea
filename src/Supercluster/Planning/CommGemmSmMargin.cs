namespace Supercluster.Planning;

/// <summary>
/// SMs that Transformer Engine's userbuffers tensor-parallel overlap (<c>ub_tp_comm_overlap</c>) takes away from the two
/// row-parallel forward GEMMs (attention output <c>proj_fprop</c>, MLP down <c>fc2_fprop</c>) whose reduce-scatter it pipelines
/// under them. With <c>method: pipeline</c> and <c>set_sm_margin</c>, TE's <c>CommOverlapBase</c> launches every chunk of that
/// GEMM on <c>sm_count − num_sm</c> SMs (<c>_math_sms</c>, passed to cuBLASLt as its SM-count target), leaving
/// <c>num_sm</c> to the reduce-scatter kernel for the whole GEMM; so the GEMM runs at (SMs − num_sm)/SMs of the GPU's
/// per-SM rate, its waves quantised on the SMs it has. 0 = no margin (ring-exchange/copy-engine overlap, or no userbuffers).
/// The numbers are each run's <c>ub_tp_comm_overlap_cfg</c> (NVIDIA dgxc-benchmarking v25.02.01 YAMLs); where a YAML sets
/// none, TE's default applies: 16 SMs for <c>pipeline</c>, with the margin only from TE 2.0 (<c>set_sm_margin</c> False
/// before). The other overlaps (bulk, ring exchange) run without a margin and stay under <see cref="ClusterSpec.CommSmShare"/>.
/// </summary>
public sealed record CommGemmSmMargin(int ProjFpropSms, int Fc2FpropSms)
{
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
