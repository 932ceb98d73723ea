using System.Globalization;

namespace Supercluster.Planning;

/// <summary>One input the prediction rests on, its value and where the value comes from.</summary>
public sealed record Assumption(string Name, string Value, string Source);

/// <summary>Lists every assumption behind a plan so the report can print it next to the numbers.</summary>
public static class Assumptions
{
    public static IReadOnlyList<Assumption> For(PlanInputs p)
    {
        static string F(double v) => v.ToString("G4", CultureInfo.InvariantCulture);
        var (c, o, ov) = (p.Cluster, p.Operations, p.Overlap);
        return
        [
            new("model", p.Model.Name, ModelCatalog.All.FirstOrDefault(e => e.Spec == p.Model)?.Source ?? "explicit shape (--layers/--hidden/...)"),
            new("FLOPs per token", "6N + 12·L·s·h + 6·h·V", "Kaplan et al. 2020; Narayanan et al. 2021 eq. 3; PaLM App. B"),
            new("GPU peak", $"{F(c.Gpu.PeakTflops(p.Run.Precision))} TFLOP/s {p.Run.Precision.ToString().ToLowerInvariant()} dense, {F(c.Gpu.MemoryGB)} GB, {F(c.Gpu.TdpWatts)} W", c.Gpu.Source),
            c.ComputeEfficiency > 0
                ? new("compute efficiency", F(c.ComputeEfficiency), "--compute-efficiency: one share of peak for every FLOP (replaces the per-operation model)")
                : new("compute model", $"per GEMM: {F(c.Gpu.GemmEfficiency * c.Gpu.LayerShapeGemmShare * 100)}% of peak × tile/wave quantisation on {c.Gpu.SmCount} SMs, roofline at {F(c.Gpu.MemoryBandwidthGBs * c.Gpu.MemoryEfficiency)} GB/s",
                    $"maximum achievable matmul FLOPS ({c.Gpu.KernelSource}){(c.Gpu.LayerShapeGemmShare < 1 ? $" × {F(c.Gpu.LayerShapeGemmShare)} that published cuBLAS benchmarks reach of it" : "")}; NVIDIA wave quantisation; docs/planning.md"),
            new("attention", p.Run.Attention == AttentionKernel.Flash && c.Gpu.FlashAttentionTflops > 0
                    ? $"FlashAttention at {F(c.Gpu.FlashAttentionTflops)} TFLOP/s fwd+bwd (causal work)"
                    : "batched GEMMs + fused softmax and dropout (memory-bound)", "Dao 2023 (FlashAttention-2) §4.1; Megatron-LM 2021 kernels"),
            new("memory-bound ops", "norms, residual adds, activation, rotary, loss, fp32 gradient accumulation: bytes ÷ streaming bandwidth; backward 2× forward bytes",
                p.Layout.SequenceParallel ? "sequence parallel: h-wide ops ÷ TP (Korthikanti et al. 2022)" : "no sequence parallelism: every TP rank repeats h-wide ops (Megatron-LM 2021)"),
            new("intra-node", $"{F(c.IntraBandwidthGBs)} GB/s/dir × {F(c.NvlinkEfficiency)}, {F(c.IntraNodeLatencyUs)} µs", "NVLink data sheet; nccl-tests busbw ≈ 80% of line rate"),
            new("inter-node", $"{F(c.InterNodeGBs * 8)} Gb/s per GPU × {F(c.NetworkEfficiency)}, {F(c.InterNodeLatencyUs)} µs", "400G RDMA NIC per GPU (rail-optimized InfiniBand/RoCE); achievable fraction of line rate"),
            new("collectives", "ring: all-reduce 2(n−1)/n·B/bw, all-gather/reduce-scatter (n−1)/n·B/bw", "Thakur et al. 2005; Patarasuk & Yuan 2009"),
            new("overlap", $"TP {F(ov.TensorParallel)}{(ov.TensorParallelAsyncBackward ? " (+ column-parallel backward under its GEMMs)" : "")}, CP {F(ov.ContextParallel)}, EP {F(ov.ExpertAllToAll)}, DP {F(ov.DataParallel)} of a micro-batch",
                "Megatron-LM overlap_grad_reduce/overlap_param_gather" + (ov.TensorParallelAsyncBackward ? "; LinearWithGradAccumulationAndAsyncCommunication (2022)" : "; TP and EP assumed exposed")),
            .. (p.Run.Userbuffers is { } ub
                ? new Assumption[] { new("userbuffers", $"GEMMs in ring chunks of T/{ub.RingChunks(p.Layout.Tp)} and pipeline chunks of T/{ub.PipelineSplits}; attention-output / MLP-down forward on {c.Gpu.SmCount} − {ub.ProjFpropSms} / − {ub.Fc2FpropSms} SMs",
                    "Transformer Engine CommOverlap (ub_tp_comm_overlap_cfg: ring_exchange, pipeline num_splits, num_sm with set_sm_margin)") }
                : []),
            new("hidden communication", c.ComputeEfficiency > 0 ? "free (included in --compute-efficiency)"
                    : $"slows the compute under it by {F(c.IntraNodeCommSmShare)} (NVLink) / {F(c.InterNodeCommSmShare)} (network) of the time it runs",
                "Calculon (Isaev et al. 2023) processor_usage, A100: NCCL channels resident on SMs"),
            new("pipeline", $"1F1B{(p.Layout.Interleave > 1 ? $" interleaved (v = {p.Layout.Interleave}, 2·(v·m+p−1) p2p sends)" : "")}, bubble (p−1)/(v·m+p−1), slowest stage{(p.Layout.UnevenEnds ? ", first/last stage one layer fewer" : " (the last runs the output layer)")}",
                p.Layout.UnevenEnds ? "Narayanan et al. 2021 §2.2; Llama 3 §3.3.2 (uneven first/last stage)" : "Narayanan et al. 2021 §2.2 (1F1B, interleaved)"),
            new("model state bytes", "2 weights + 2 gradients + 12 Adam (fp32 master, m, v) per parameter", "Rajbhandari et al. 2020 (ZeRO) §3"),
            new("activations", "s·b·h·(34 + 5·a·s/h)/t per layer (generalised to GQA/SwiGLU/MoE)", "Korthikanti et al. 2022 eq. 2, Table 2"),
            new("reserved memory", $"{F(MemoryModel.ReservedFraction * 100)}% of GPU memory", "CUDA context, NCCL buffers, allocator fragmentation"),
            new("failure rate", $"{F(o.FailureRate)} per 1000 node-days", o.FailuresPer1000NodeDays > 0 ? "--failures-per-1000-node-days" : "Llama 3 (Meta 2024) §3.3.4: 419 unexpected interruptions, 54 days, 2048 nodes"),
            new("checkpoint", $"14 bytes/param (bf16 weights + fp32 Adam state) at {F(o.CheckpointWriteGBs)} GB/s aggregate", "Llama 3 §3.3.4: Tectonic sustains 2 TB/s"),
            new("restart", $"{F(o.RestartMinutes)} min", "reschedule, reload checkpoint, warm up"),
            new("checkpoint interval", "Daly: √(2δM)·[1 + ⅓√(δ/2M) + δ/18M] − δ", "Young 1974; Daly 2006"),
            new("power", $"GPU TDP + {F(o.NodeOverheadWatts)} W per node, PUE {F(o.Pue)}", "DGX H100 10.2 kW max − 8×700 W; hyperscale PUE 1.1–1.2"),
            new("price", o.PricePerGpu > 0 ? $"${F(o.PricePerGpu)} per GPU + ${F(o.PricePerKwh)}/kWh" : $"${F(o.PricePerGpuHour)} per GPU-hour + ${F(o.PricePerKwh)}/kWh", "2024–25 H100 cloud prices; EIA US industrial electricity"),
        ];
    }
}
