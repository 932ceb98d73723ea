namespace Supercluster.Planning;

/// <summary>What a paper reports: hardware FLOP/s per GPU (recomputation counted), model FLOP/s per GPU, or seconds per step.</summary>
public enum PublishedMetric { HfuTflopsPerGpu, MfuTflopsPerGpu, StepSeconds }

/// <summary>
/// One published training run, configured as its paper says it ran (layout, schedule, attention kernel, overlap, fabric).
/// None of these runs was used to set a constant: the compute model is calibrated on kernel benchmarks only.
/// </summary>
public sealed record PublishedRun(string Name, string Source, PlanInputs Inputs, PublishedMetric Metric, double Published)
{
    /// <summary>The planner's value of the published metric.</summary>
    public double Predicted(PlanResult r) => Metric switch
    {
        PublishedMetric.HfuTflopsPerGpu => r.Hfu * Inputs.Cluster.Gpu.PeakTflops(Inputs.Run.Precision),
        PublishedMetric.MfuTflopsPerGpu => r.ModelTflopsPerGpu,
        _ => r.StepTimeSeconds,
    };

    /// <summary>Relative throughput error: predicted ÷ published − 1 (for step times, published ÷ predicted − 1).</summary>
    public double Error(PlanResult r) => Metric == PublishedMetric.StepSeconds ? Published / Predicted(r) - 1 : Predicted(r) / Published - 1;
}

/// <summary>
/// Every published run the planner is checked against (docs/planning.md, "Calibration"). Systems as configured by their papers:
/// * Megatron-LM 2021 (Narayanan et al., Table 1): A100 80GB DGX nodes (Selene: 8 × 200 Gb/s HDR InfiniBand per node), fp16,
///   seq 2048, vocab 51,200, full recomputation, no sequence parallelism, attention as batched GEMMs + fused softmax,
///   fp16 gradients accumulated in place by autograd (no contiguous DDP buffers, no fp32 accumulation in the scripts),
///   and, per row, micro-batch, interleaved stages and DDP as the paper's own scripts set them (Megatron-LM
///   <c>examples/sc21/run_table_1.sh</c>, Aug 2021): micro-batch 16/16/16/8/4/2/2/1/1/1, v = 3 (76B), 2 (145B), 2 (310B),
///   3 (530B), PyTorch DDP (all-reduce under the last backward) without pipelining, Megatron's DDP after the flush with it.
///   Table 2's PTD rows (micro-batch 1 stated; no script) are non-interleaved with the gradient all-reduce after the flush,
///   as is the README's GPT-3 example (<c>examples/pretrain_gpt3_175B.sh</c>: TP 8 × PP 16 × DP 8, micro-batch 1, batch 1536).
/// * Korthikanti et al. 2022 (Tables 3 and 5): same machine, sequence parallelism + selective recomputation, DP 1, bf16
///   gradients accumulated inside the wgrad GEMM (the 2022 code's <c>--gradient-accumulation-fusion</c> default); and the
///   abstract's 530B runs on 2240 GPUs (DP 8), with and without the paper's techniques.
/// * MT-NLG 530B (Smith et al. 2022, §3.2 and Table 1): Selene, TP 8 × PP 35, batch 1920, Megatron-DeepSpeed: kernels as Megatron
///   2021, DeepSpeed's pipeline engine (sequential blocking p2p, <see cref="PipelineEngine.DeepSpeed"/>).
/// * BLOOM 176B (BigScience 2022, Le Scao et al. §3.4): Jean Zay, 48 nodes of 8 A100 80GB (4 × 100 Gb/s Omni-Path per node),
///   TP 4 × PP 12 × DP 8, ZeRO-1, micro-batch 2, batch 2048, full recomputation; 70 layers on 12 stages, the first and last
///   holding one fewer (DeepSpeed partition method "type:transformer|embedding"), DeepSpeed's pipeline engine, bf16 with
///   DeepSpeed's BF16_Optimizer accumulating every micro-batch's gradient through an fp32 copy.
/// * Nemotron-4 340B (NVIDIA 2024, Table 2): H100 80GB DGX nodes, bf16, TP 8 × PP 12 × DP 16–64, seq 4096, Megatron-Core
///   (<see cref="Nemotron4"/>); an ungated squared-ReLU MLP without biases (<see cref="ModelSpec.GptStyle"/> false).
/// * NVIDIA's DGX Cloud benchmarks (dgxc-benchmarking v25.02.01, NeMo 24.12, DGX H100): GPT-3 175B, Nemotron-4 15B/340B,
///   Llama 3.1 8B/70B/405B in BF16, each README's layout and YAML's settings (<see cref="Dgxc"/>).
/// * Llama 3 405B (Meta 2024, Table 4, §3.3.2): H100 80GB, 400 Gb/s RoCE per GPU, bf16, TP 8, PP 16 interleaved, uneven first and
///   last stages (126 layers), FlashAttention, gradient sync overlapped (FSDP), CP all-gather of K/V for long context.
/// </summary>
public static class PublishedRuns
{
    static readonly OperationsSpec Ops = new();

    const string Table2 = "Narayanan et al. 2021, Table 2 (PTD parallelism)";

    static ClusterSpec Selene(int gpus) => new(GpuCatalog.Get("A100-80GB"), gpus, InterNodeGBs: 25);
    static readonly OverlapAssumptions Megatron2021 = new(TensorParallel: 0, ContextParallel: 0, ExpertAllToAll: 0, DataParallel: 0);
    /// <summary>Megatron-LM as Korthikanti et al. 2022 ran it: the 2022 code overlaps the column-parallel linears' backward TP
    /// communication with their GEMMs (<c>LinearWithGradAccumulationAndAsyncCommunication</c>; with sequence parallelism
    /// unconditionally, without it by <c>--async-tensor-model-parallel-allreduce</c>, on by default).</summary>
    static readonly OverlapAssumptions Megatron2022 = Megatron2021 with { TensorParallelAsyncBackward = true };

    /// <summary>PyTorch DDP (<c>--DDP-impl torch</c>): Megatron-LM 2021 runs all micro-batches but the last under <c>no_sync</c>,
    /// so the bucketed gradient all-reduce overlaps the last micro-batch's backward (with its recomputed forward: ¾ of it by
    /// FLOPs; Li et al. 2020, PyTorch Distributed). Megatron's own DDP (<c>local</c>, the pipelined rows) all-reduces after the flush.</summary>
    /// <summary>Megatron-Core 2024: the 2022 async backward, and the distributed optimizer's gradient reduce-scatter and parameter
    /// all-gather under the backward and forward (<c>--overlap-grad-reduce --overlap-param-gather</c>).</summary>
    static readonly OverlapAssumptions MegatronCore2024 = Megatron2022 with { DataParallel = 1 };

    static readonly OverlapAssumptions Megatron2021TorchDdp = Megatron2021 with { DataParallel = 0.75 };

    /// <summary>Table 1 as the paper's own scripts run it (Megatron-LM <c>examples/sc21/run_table_1.sh</c> and <c>CONFIG.sh</c>,
    /// Aug 2021: <c>--micro-batch-size</c>, <c>--num-layers-per-virtual-pipeline-stage</c>, <c>--DDP-impl</c>, fp16).</summary>
    static PublishedRun Megatron(string name, int heads, int hidden, int layers, int tp, int pp, int gpus, int batch, double tflops,
        string source = "Narayanan et al. 2021, Table 1", int microBatch = 1, int interleave = 1, bool torchDdp = false) =>
        new($"Megatron-LM {name}", source, new PlanInputs(
                new ModelSpec(name, layers, hidden, heads, heads, 4 * hidden, 51200),
                new TrainingRun(2048, 1e12, batch, Precision.Fp16, AttentionKernel.Unfused, GradAccumulation: GradAccumulation.Fp16InPlace), Selene(gpus),
                new ParallelLayout(tp, pp, gpus / (tp * pp), MicroBatch: microBatch, Interleave: interleave, Zero: 0, Recompute: Recompute.Full,
                    SequenceParallel: false), torchDdp ? Megatron2021TorchDdp : Megatron2021, Ops),
            PublishedMetric.HfuTflopsPerGpu, tflops);

    static PublishedRun Korthikanti(string name, int heads, int hidden, int layers, int pp, int gpus, int batch, double seconds) =>
        new($"Korthikanti {name}", "Korthikanti et al. 2022, Tables 3 and 5 (sequence parallel + selective recompute)", new PlanInputs(
                new ModelSpec(name, layers, hidden, heads, heads, 4 * hidden, 51200),
                new TrainingRun(2048, 1e12, batch, Precision.Bf16, AttentionKernel.Unfused, GradAccumulation: GradAccumulation.FusedIntoGemm),
                Selene(gpus), new ParallelLayout(8, pp, 1, Zero: 0, Recompute: Recompute.Selective), Megatron2022, Ops),
            PublishedMetric.StepSeconds, seconds);

    /// <summary>Korthikanti et al. 2022, abstract: the 530B model on 2240 A100s reaches 54.2% MFU with sequence parallelism and
    /// selective recomputation, 42.1% with (full) recomputation. Layout: Table 3's 530B replica (TP 8 × PP 35) × DP 8; batch
    /// 2240 = Table 3's 280 sequences per replica × 8 (assumed: the abstract gives no batch; 1920 moves either row by ~1 point).</summary>
    static PublishedRun Korthikanti2240(string name, Recompute recompute, bool sequenceParallel, double mfu) =>
        new($"Korthikanti 530B on 2240 GPUs, {name}", "Korthikanti et al. 2022, abstract (MFU on 2240 A100s)", new PlanInputs(
                new ModelSpec("530B", 105, 20480, 128, 128, 4 * 20480, 51200),
                new TrainingRun(2048, 1e12, 2240, Precision.Bf16, AttentionKernel.Unfused, GradAccumulation: GradAccumulation.FusedIntoGemm),
                Selene(2240), new ParallelLayout(8, 35, 8, Zero: 0, Recompute: recompute, SequenceParallel: sequenceParallel), Megatron2022, Ops),
            PublishedMetric.MfuTflopsPerGpu, mfu * GpuCatalog.Get("A100-80GB").Bf16Tflops);

    static PublishedRun Llama3(string name, int gpus, int cp, int dp, int seq, double tflops) =>
        new($"Llama 3 405B {name}", "Meta 2024, The Llama 3 Herd of Models, Table 4", new PlanInputs(
                ModelCatalog.Get("llama3-405b"),
                new TrainingRun(seq, 1e12, (16L << 20) / seq, Precision.Bf16, AttentionKernel.Flash),
                new ClusterSpec(GpuCatalog.Get("H100-SXM"), gpus),
                new ParallelLayout(8, 16, dp, cp, Interleave: 2, Zero: 1, Recompute: Recompute.Selective, UnevenEnds: true),
                new OverlapAssumptions(TensorParallel: 0, ContextParallel: 0, ExpertAllToAll: 0, DataParallel: 1), Ops),
            PublishedMetric.MfuTflopsPerGpu, tflops);

    /// <summary>Nemotron-4 340B (NVIDIA 2024, technical report: training setup and Table 2): 768 DGX H100 nodes (8 × 400 Gb/s per node),
    /// bf16, TP 8 × PP 12 (interleaved) × DP 16/32/64, micro-batch 1, seq 4096, batches 768/1536/2304 at 10.3/10.3/8.0 s.
    /// The report gives no virtual-stage count: v = 8 as NVIDIA's own recipe for this model at TP 8 × PP 12 sets it (NeMo
    /// <c>llm/recipes/nemotron4_340b.py</c>: one layer per virtual stage). Megatron-Core as of 2024: FlashAttention (TE),
    /// sequence parallelism, distributed optimizer with gradient reduce and parameter gather overlapped, wgrad accumulated in the
    /// GEMM, the column-parallel linears' backward TP communication under their GEMMs; TP forward communication exposed.</summary>
    static PublishedRun Nemotron4(int dp, long batch, double seconds) =>
        new($"Nemotron-4 340B on {dp * 96} GPUs", "NVIDIA 2024, Nemotron-4 340B Technical Report, Table 2", new PlanInputs(
                new ModelSpec("nemotron-4-340b", 96, 18432, 96, 8, 73728, 256000, DefaultSeqLen: 4096) { GptStyle = false },
                new TrainingRun(4096, 1e12, batch, Precision.Bf16, AttentionKernel.Flash, GradAccumulation: GradAccumulation.FusedIntoGemm),
                new ClusterSpec(GpuCatalog.Get("H100-SXM"), dp * 96),
                new ParallelLayout(8, 12, dp, Interleave: 8, Zero: 1, Recompute: Recompute.Selective),
                MegatronCore2024, Ops),
            PublishedMetric.StepSeconds, seconds);

    /// <summary>NVIDIA's DGX Cloud benchmarking recipes (github.com/NVIDIA/dgxc-benchmarking, v25.02.01, NeMo 24.12 on DGX H100,
    /// 8 × 400 Gb/s per node): BF16 step times of 50–100-step runs on synthetic data, each recipe's smallest and largest full-model
    /// GPU count. Layout from each README's table, the rest from the recipe's YAML: FlashAttention (TE), sequence parallelism,
    /// distributed optimizer (ZeRO-1) with gradient reduce and parameter gather overlapped, wgrad accumulated in the GEMM, no
    /// recomputation (340B: selective, which FlashAttention makes free), TP communication under the GEMMs where the YAML sets
    /// <c>ub_tp_comm_overlap</c> (175B, 15B, Llama 3.1; <paramref name="ub"/>: its GEMM chunks and the SMs its pipelined
    /// reduce-scatters keep from the row-parallel forward GEMMs, from the YAML's <c>ub_tp_comm_overlap_cfg</c>) and the 2022 async backward only where it
    /// does not (340B, <paramref name="ub"/> null), context parallelism as TE's ring attention, its K/V exchange under the
    /// attention kernel.</summary>
    static PublishedRun Dgxc(string name, ModelSpec model, int seq, int gpus, long batch, int tp, int pp, int cp, int v, int microBatch,
        UserbufferOverlap? ub, double seconds, Recompute recompute = Recompute.None) =>
        new($"DGXC {name} on {gpus} GPUs", $"NVIDIA dgxc-benchmarking v25.02.01, {name} BF16 README table", new PlanInputs(
                model, new TrainingRun(seq, 1e12, batch, Precision.Bf16, AttentionKernel.Flash, GradAccumulation: GradAccumulation.FusedIntoGemm,
                    Userbuffers: ub),
                new ClusterSpec(GpuCatalog.Get("H100-SXM"), gpus),
                new ParallelLayout(tp, pp, gpus / (tp * pp * cp), cp, MicroBatch: microBatch, Interleave: v, Zero: 1, Recompute: recompute),
                MegatronCore2024 with { TensorParallel = ub is null ? 0 : 1, ContextParallel = 1 }, Ops),
            PublishedMetric.StepSeconds, seconds);

    static readonly UserbufferOverlap Gpt3Ub = new(24, 20), Llama70Ub = new(24, 16), Llama405Ub = new(24, 8, Aggregate: true), TeDefaultUb = new(0, 0);
    static readonly ModelSpec Gpt3Nemo = new("gpt3-175b", 96, 12288, 96, 96, 49152, 50688, TiedEmbeddings: true); // vocab padded to 128·TP
    static readonly ModelSpec Nemotron4_15B = new("nemotron-4-15b", 32, 6144, 48, 8, 24576, 256000) { GptStyle = false };
    static readonly ModelSpec Nemotron4_340B = new("nemotron-4-340b", 96, 18432, 96, 8, 73728, 256000) { GptStyle = false };

    static PublishedRun MtNlg(int nodes, double seconds) =>
        new($"MT-NLG 530B, {nodes} nodes", "Smith et al. 2022 (Megatron-Turing NLG), §3.2 throughput", new PlanInputs(
                new ModelSpec("mt-nlg-530b", 105, 20480, 128, 128, 4 * 20480, 51200),
                new TrainingRun(2048, 1e12, 1920, Precision.Bf16, AttentionKernel.Unfused, PipelineEngine.DeepSpeed), Selene(nodes * 8),
                new ParallelLayout(8, 35, nodes / 35, Zero: 1, Recompute: Recompute.Full, SequenceParallel: false), Megatron2021, Ops),
            PublishedMetric.StepSeconds, seconds);

    public static readonly IReadOnlyList<PublishedRun> All =
    [
        // Micro-batch, virtual stages (layers per stage ÷ --num-layers-per-virtual-pipeline-stage) and DDP from run_table_1.sh.
        Megatron("1.7B", 24, 2304, 24, 1, 1, 32, 512, 137, microBatch: 16, torchDdp: true),
        Megatron("3.6B", 32, 3072, 30, 2, 1, 64, 512, 138, microBatch: 16, torchDdp: true),
        Megatron("7.5B", 32, 4096, 36, 4, 1, 128, 512, 142, microBatch: 16, torchDdp: true),
        Megatron("18.4B", 48, 6144, 40, 8, 1, 256, 1024, 135, microBatch: 8, torchDdp: true),
        Megatron("39.1B", 64, 8192, 48, 8, 2, 512, 1536, 138, microBatch: 4),
        Megatron("76.1B", 80, 10240, 60, 8, 4, 1024, 1792, 140, microBatch: 2, interleave: 3),
        Megatron("145.6B", 96, 12288, 80, 8, 8, 1536, 2304, 148, microBatch: 2, interleave: 2),
        Megatron("310.1B", 128, 16384, 96, 8, 16, 1920, 2160, 155, interleave: 2),
        Megatron("529.6B", 128, 20480, 105, 8, 35, 2520, 2520, 163, interleave: 3),
        Megatron("1008.0B", 160, 25600, 128, 8, 64, 3072, 3072, 163),
        // Table 2 (PTD parallelism against ZeRO-3): GPT-3 175B (96 layers) as TP 8 × PP 12 and the 530B model as TP 8 × PP 35,
        // micro-batch 1, fixed batch, more GPUs by data parallelism.
        Megatron("174.6B on 384 GPUs", 96, 12288, 96, 8, 12, 384, 1536, 153, Table2),
        Megatron("174.6B on 768 GPUs", 96, 12288, 96, 8, 12, 768, 1536, 149, Table2),
        Megatron("174.6B on 1536 GPUs", 96, 12288, 96, 8, 12, 1536, 1536, 141, Table2),
        Megatron("529.6B on 560 GPUs", 128, 20480, 105, 8, 35, 560, 2240, 171, Table2),
        Megatron("529.6B on 1120 GPUs", 128, 20480, 105, 8, 35, 1120, 2240, 167, Table2),
        Megatron("529.6B on 2240 GPUs", 128, 20480, 105, 8, 35, 2240, 2240, 159, Table2),
        // Megatron-LM README, "GPT-3 Example" (examples/pretrain_gpt3_175B.sh, 2021: TP 8 × PP 16 on 128 nodes, micro-batch 1,
        // batch 1536, fp16, --checkpoint-activations, container pytorch:20.12, local DDP): "around 32 seconds … 138 teraFLOPs per GPU".
        Megatron("174.6B on 1024 GPUs", 96, 12288, 96, 8, 16, 1024, 1536, 138, "Megatron-LM README, GPT-3 Example (examples/pretrain_gpt3_175B.sh)"),
        Korthikanti("22B", 64, 6144, 48, 1, 8, 4, 1.10),
        Korthikanti("175B", 96, 12288, 96, 8, 64, 64, 13.75),
        Korthikanti("530B", 128, 20480, 105, 35, 280, 280, 37.83),
        Korthikanti("1T", 160, 25600, 128, 64, 512, 512, 71.49),
        Korthikanti2240("sequence parallel + selective recompute", Recompute.Selective, true, 0.542),
        Korthikanti2240("full recompute", Recompute.Full, false, 0.421),
        MtNlg(280, 60.1),
        MtNlg(350, 50.2),
        MtNlg(420, 44.4),
        new("BLOOM 176B", "BigScience 2022 (Le Scao et al.), §3.4: 150 TFLOP/s per GPU", new PlanInputs(
                new ModelSpec("bloom-176b", 70, 14336, 112, 112, 4 * 14336, 250880, TiedEmbeddings: true),
                new TrainingRun(2048, 1e12, 2048, Precision.Bf16, AttentionKernel.Unfused, PipelineEngine.DeepSpeed, GradAccumulation.Bf16ViaFp32Copy),
                new ClusterSpec(GpuCatalog.Get("A100-80GB"), 384, InterNodeGBs: 6.25),
                new ParallelLayout(4, 12, 8, MicroBatch: 2, Zero: 1, Recompute: Recompute.Full, SequenceParallel: false, UnevenEnds: true), Megatron2021, Ops),
            PublishedMetric.HfuTflopsPerGpu, 150),
        Llama3("8K GPUs", 8192, 1, 64, 8192, 430),
        Llama3("16K GPUs", 16384, 1, 128, 8192, 400),
        Llama3("16K GPUs, 128K context", 16384, 16, 8, 131072, 380),
        Nemotron4(16, 768, 10.3),
        Nemotron4(32, 1536, 10.3),
        Nemotron4(64, 2304, 8.0),
        // NVIDIA dgxc-benchmarking, BF16 tables: smallest and largest full-model GPU count of each dense recipe. GPT-3's
        // v = 6 is its YAML's (gpt3_175b_hydra.yaml, what the launcher runs); its README's table header says VP=12.
        // Userbuffers from each YAML's ub_tp_comm_overlap_cfg: SM margins (proj_fprop, fc2_fprop) GPT-3 24/20, Llama 3.1 70B
        // 24/16, 405B 24/8 (its ring exchanges aggregate: 1); all with 4 pipeline splits. Nemotron-4 15B's YAML sets
        // ub_tp_comm_overlap without a cfg, so TE's default: the same methods, 4 splits, 16 SMs but no margin before TE 2.0
        // (set_sm_margin False; the NeMo 24.12 container's TE is 1.x), 0/0.
        Dgxc("GPT-3 175B", Gpt3Nemo, 2048, 128, 256, 4, 8, 1, 6, 1, Gpt3Ub, 8.309),
        Dgxc("GPT-3 175B", Gpt3Nemo, 2048, 2048, 4096, 4, 8, 1, 6, 1, Gpt3Ub, 8.49),
        Dgxc("Nemotron-4 15B", Nemotron4_15B, 4096, 16, 64, 4, 1, 1, 1, 4, TeDefaultUb, 2.812),
        Dgxc("Nemotron-4 15B", Nemotron4_15B, 4096, 2048, 8192, 4, 1, 1, 1, 4, TeDefaultUb, 2.887),
        Dgxc("Nemotron-4 340B", Nemotron4_340B, 4096, 128, 32, 8, 8, 1, 12, 1, null, 4.61, Recompute.Selective),
        Dgxc("Nemotron-4 340B", Nemotron4_340B, 4096, 2048, 512, 8, 8, 1, 12, 1, null, 4.84, Recompute.Selective),
        Dgxc("Llama 3.1 8B", ModelCatalog.Get("llama3-8b"), 8192, 8, 128, 1, 1, 2, 1, 1, null, 12.78),
        Dgxc("Llama 3.1 8B", ModelCatalog.Get("llama3-8b"), 8192, 128, 2048, 1, 1, 2, 1, 1, null, 13.16),
        Dgxc("Llama 3.1 70B", ModelCatalog.Get("llama3-70b"), 8192, 64, 128, 4, 4, 2, 5, 1, Llama70Ub, 14.61),
        Dgxc("Llama 3.1 70B", ModelCatalog.Get("llama3-70b"), 8192, 2048, 4096, 4, 4, 2, 5, 1, Llama70Ub, 14.84),
        Dgxc("Llama 3.1 405B", ModelCatalog.Get("llama3-405b"), 8192, 576, 252, 8, 9, 2, 7, 1, Llama405Ub, 17.50),
        Dgxc("Llama 3.1 405B", ModelCatalog.Get("llama3-405b"), 8192, 2304, 1008, 8, 9, 2, 7, 1, Llama405Ub, 17.70),
    ];
}

/// <summary>Predicted vs published for every row, and the mean absolute error.</summary>
public static class CalibrationTable
{
    public sealed record Row(PublishedRun Run, double Predicted, double Error);

    public static IReadOnlyList<Row> Rows() => PublishedRuns.All.Select(r =>
    {
        var plan = Planner.Plan(r.Inputs);
        return new Row(r, r.Predicted(plan), r.Error(plan));
    }).ToList();

    public static double MeanAbsoluteError(IReadOnlyList<Row> rows) => rows.Average(r => Math.Abs(r.Error));

    /// <summary>Where a row's predicted step goes, each a share of the step: the compute split pro rata into GEMMs, attention
    /// and memory-bound passes (the slowest stage's micro-batch, <see cref="ComputeModel.Stage"/>), then the bubble and each
    /// exposed collective (<see cref="StepTime"/>); <see cref="TpRaw"/> is the TP communication before any of it is hidden.</summary>
    public sealed record Breakdown(double Gemm, double Attention, double MemoryBound, double Bubble, double TensorParallel,
        double ContextParallel, double ExpertAllToAll, double PipelineP2P, double DataParallel, double Optimizer, double TpRaw);

    public static Breakdown BreakdownOf(PublishedRun r)
    {
        var i = r.Inputs;
        var st = StepTimeModel.Estimate(i.Model, i.Run, i.Layout, i.Cluster, i.Overlap);
        var raw = StepTimeModel.Estimate(i.Model, i.Run, i.Layout, i.Cluster, i.Overlap with { TensorParallel = 0, TensorParallelAsyncBackward = false });
        var stage = ComputeModel.Stage(i.Model, i.Run, i.Layout, i.Cluster.PacingGpu);
        double t = st.Total, compute = st.Compute / t / stage.Total;
        return new Breakdown(stage.Gemm * compute, stage.Attention * compute, stage.MemoryBound * compute, st.Bubble / t,
            st.TensorParallel / t, st.ContextParallel / t, st.ExpertAllToAll / t, st.PipelineP2P / t, st.DataParallel / t,
            st.Optimizer / t, raw.TensorParallel / t);
    }
}
