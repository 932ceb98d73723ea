using System.CommandLine;
using System.Text.Json;
using System.Text.Json.Serialization;
using Supercluster.Planning;

namespace Supercluster.Cli.Commands;

/// <summary><c>plan</c>: predict a training run on N GPUs (time, MFU, memory, failures, energy, cost). Pure computation, no libtorch.</summary>
public static class PlanCommand
{
    // Model
    static readonly Option<string> Model = new("--model") { Description = $"Model preset: {string.Join(", ", ModelCatalog.All.Select(e => e.Spec.Name))} (sources in docs/planning.md)", DefaultValueFactory = _ => "gpt3-175b" };
    static readonly Option<int?> Layers = new("--layers") { Description = "Override: transformer layers" };
    static readonly Option<int?> Hidden = new("--hidden") { Description = "Override: model width h" };
    static readonly Option<int?> Heads = new("--heads") { Description = "Override: attention heads" };
    static readonly Option<int?> KvHeads = new("--kv-heads") { Description = "Override: key/value heads (grouped-query attention)" };
    static readonly Option<int?> Ffn = new("--ffn") { Description = "Override: MLP width" };
    static readonly Option<int?> Vocab = new("--vocab") { Description = "Override: vocabulary size" };
    static readonly Option<int?> Experts = new("--experts") { Description = "Override: experts per MoE layer (1 = dense)" };
    static readonly Option<int?> ActiveExperts = new("--active-experts") { Description = "Override: experts each token uses (top-k)" };
    static readonly Option<int?> MoeEveryOpt = new("--moe-every") { Description = "Override: every N-th layer is a mixture of experts (train's --moe-every; parameters and FLOPs count it, the step-time model assumes all)" };
    static readonly Option<int?> Seq = new("--seq") { Description = "Sequence length (default: the preset's context)" };
    static readonly Option<double> Tokens = new("--tokens") { Description = "Training tokens", DefaultValueFactory = _ => 1e12 };
    static readonly Option<long?> Batch = new("--batch") { Description = "Global batch in sequences (overrides --batch-tokens)" };
    static readonly Option<long> BatchTokens = new("--batch-tokens") { Description = "Global batch in tokens (Llama 3 405B: 16M)", DefaultValueFactory = _ => 16L << 20 };
    static readonly Option<string> PrecisionOpt = new("--precision") { Description = "bf16, fp16 or fp8 (peak used for time and MFU)", DefaultValueFactory = _ => "bf16" };
    // Hardware
    static readonly Option<string> Gpu = new("--gpu") { Description = $"GPU: {string.Join(", ", GpuCatalog.All.Select(g => g.Name))} (NVIDIA data sheets)", DefaultValueFactory = _ => "H100-SXM" };
    static readonly Option<int> Gpus = new("--gpus") { Description = "GPUs available", DefaultValueFactory = _ => 1024 };
    static readonly Option<int> GpusPerNode = new("--gpus-per-node") { Description = "GPUs per node (HGX/DGX: 8)", DefaultValueFactory = _ => 8 };
    static readonly Option<double?> GpuTflops = new("--gpu-tflops") { Description = "Override: dense peak TFLOP/s at --precision" };
    static readonly Option<double?> GpuMemory = new("--gpu-memory-gb") { Description = "Override: GPU memory in GB" };
    static readonly Option<double?> GpuTdp = new("--gpu-tdp-w") { Description = "Override: GPU power in W" };
    static readonly Option<double> IntraGBs = new("--intra-gbs") { Description = "Intra-node GB/s per GPU per direction (0 = the GPU's NVLink)", DefaultValueFactory = _ => 0 };
    static readonly Option<double> IntraLatency = new("--intra-latency-us") { Description = "Intra-node latency per hop, µs", DefaultValueFactory = _ => 3 };
    static readonly Option<double> InterGbps = new("--inter-gbps") { Description = "Inter-node RDMA Gb/s per GPU (ConnectX-7: 400)", DefaultValueFactory = _ => 400 };
    static readonly Option<double> InterLatency = new("--inter-latency-us") { Description = "Inter-node latency per hop, µs", DefaultValueFactory = _ => 10 };
    static readonly Option<double> ComputeEff = new("--compute-efficiency") { Description = "One achievable fraction of peak for every FLOP instead of the per-operation compute model (0 = per-operation model)", DefaultValueFactory = _ => 0 };
    static readonly Option<double> NvlinkEff = new("--nvlink-efficiency") { Description = "Achievable fraction of NVLink line rate (nccl-tests)", DefaultValueFactory = _ => 0.8 };
    static readonly Option<double> NetEff = new("--net-efficiency") { Description = "Achievable fraction of RDMA line rate", DefaultValueFactory = _ => 0.9 };
    static readonly Option<double> IntraCommSm = new("--intra-comm-sm-share") { Description = "Share of compute an NVLink collective takes while hidden under it (NCCL channels on SMs; Calculon A100: 0.15)", DefaultValueFactory = _ => 0.15 };
    static readonly Option<double> InterCommSm = new("--inter-comm-sm-share") { Description = "Share of compute an inter-node collective takes while hidden under it (Calculon A100: 0.02)", DefaultValueFactory = _ => 0.02 };
    // Parallelism
    static readonly Option<int> Tp = new("--tp") { Description = "Tensor parallel size", DefaultValueFactory = _ => 8 };
    static readonly Option<int> Pp = new("--pp") { Description = "Pipeline parallel size", DefaultValueFactory = _ => 1 };
    static readonly Option<int?> Dp = new("--dp") { Description = "Data parallel size (default: GPUs ÷ (TP·PP·CP))" };
    static readonly Option<int> Cp = new("--cp") { Description = "Context parallel size", DefaultValueFactory = _ => 1 };
    static readonly Option<int> Ep = new("--ep") { Description = "Expert parallel size (within data parallelism)", DefaultValueFactory = _ => 1 };
    static readonly Option<int> MicroBatch = new("--micro-batch") { Description = "Sequences per micro-batch", DefaultValueFactory = _ => 1 };
    static readonly Option<int> Interleave = new("--interleave") { Description = "Virtual pipeline stages per GPU (interleaved 1F1B)", DefaultValueFactory = _ => 1 };
    static readonly Option<int> Zero = new("--zero") { Description = "ZeRO stage 0-3 (Rajbhandari et al. 2020)", DefaultValueFactory = _ => 1 };
    static readonly Option<string> RecomputeOpt = new("--recompute") { Description = "none, selective or full (Korthikanti et al. 2022)", DefaultValueFactory = _ => "selective" };
    static readonly Option<bool> UnevenEnds = new("--pp-uneven-ends") { Description = "First and last pipeline stage hold one layer fewer (Llama 3: 126 layers on 16 stages)" };
    static readonly Option<bool> NoSequenceParallel = new("--no-sequence-parallel") { Description = "Norms/dropout repeated on every TP rank (Megatron-LM 2021) instead of split (Korthikanti et al. 2022)" };
    static readonly Option<string> AttentionOpt = new("--attention") { Description = "flash (FlashAttention) or unfused (batched GEMMs + softmax, Megatron-LM before 2022)", DefaultValueFactory = _ => "flash" };
    static readonly Option<string> PipelineEngineOpt = new("--pipeline-engine") { Description = "megatron (send and receive batched) or deepspeed (blocking send, then receive, each step)", DefaultValueFactory = _ => "megatron" };
    static readonly Option<bool> SearchOpt = new("--search") { Description = "Enumerate legal layouts, rank by predicted time among those that fit" };
    static readonly Option<int> Top = new("--top") { Description = "Layouts to list with --search", DefaultValueFactory = _ => 5 };
    static readonly Option<double> TpOverlap = new("--tp-overlap") { Description = "Share of TP communication hidden", DefaultValueFactory = _ => 0 };
    static readonly Option<bool> TpAsyncBackward = new("--tp-async-backward") { Description = "Run the column-parallel linears' backward TP communication under their GEMMs (Megatron-LM 2022 on)" };
    static readonly Option<string?> UserbuffersOpt = new("--userbuffers") { Description = "Transformer Engine's userbuffers TP overlap (ub_tp_comm_overlap; needs TP ≥ 2 and sequence parallelism): PROJ,FC2[,aggregate] = the num_sm its pipelined reduce-scatters keep from the attention-output and MLP-down forward GEMMs (set_sm_margin; 0 = none), e.g. 24,16 (NeMo's Llama 3.1 70B); hides the TP communication (--tp-overlap 1) and runs the GEMMs in TE's chunks" };
    static readonly Option<double> CpOverlap = new("--cp-overlap") { Description = "Share of CP communication hidden", DefaultValueFactory = _ => 0.5 };
    static readonly Option<double> EpOverlap = new("--ep-overlap") { Description = "Share of EP all-to-all hidden", DefaultValueFactory = _ => 0 };
    static readonly Option<double> DpOverlap = new("--dp-overlap") { Description = "Share of a micro-batch's compute that hides the gradient sync", DefaultValueFactory = _ => 1.0 };
    // Reliability and operations
    static readonly Option<double> FailureRate = new("--failures-per-1000-node-days") { Description = "Failure rate (default 3.79: Llama 3, 419 interruptions / 54 days / 2048 nodes)", DefaultValueFactory = _ => 0 };
    static readonly Option<double> CkptGBs = new("--ckpt-write-gbs") { Description = "Aggregate checkpoint write GB/s (Llama 3: 2 TB/s)", DefaultValueFactory = _ => 2000 };
    static readonly Option<double> Restart = new("--restart-minutes") { Description = "Minutes lost per restart besides rework", DefaultValueFactory = _ => 10 };
    static readonly Option<double> NodeOverhead = new("--node-overhead-w") { Description = "Node power besides GPUs, W (DGX H100: 10.2 kW − 8×700 W)", DefaultValueFactory = _ => 4600 };
    static readonly Option<double> Pue = new("--pue") { Description = "Power usage effectiveness (hyperscale 1.1-1.2)", DefaultValueFactory = _ => 1.2 };
    static readonly Option<double> PriceGpuHour = new("--price-gpu-hour") { Description = "USD per GPU-hour", DefaultValueFactory = _ => 2.0 };
    static readonly Option<double> PriceGpu = new("--price-gpu") { Description = "USD per GPU bought (replaces --price-gpu-hour)", DefaultValueFactory = _ => 0 };
    static readonly Option<double> PriceKwh = new("--price-kwh") { Description = "USD per kWh (EIA US industrial ≈ 0.08)", DefaultValueFactory = _ => 0.08 };
    static readonly Option<double> Carbon = new("--carbon-kg-per-kwh") { Description = "Grid carbon intensity, kg CO2e/kWh (0 = not reported)", DefaultValueFactory = _ => 0 };
    // Output
    static readonly Option<string?> SweepOpt = new("--sweep") { Description = "Sweep cluster size, e.g. gpus=1024..100000 (searches a layout at each size)" };
    static readonly Option<string> Svg = new("--svg") { Description = "SVG chart path for --sweep", DefaultValueFactory = _ => "plan-sweep.svg" };
    static readonly Option<bool> Json = new("--json") { Description = "Print one JSON object with every number" };
    static readonly Option<string> DeviceOpt = new("--device") { Description = "gpu: plan GPUs from data sheets; cpu: with --calibrate, measure this machine and predict `train` on CPU ranks (run under mpirun for several ranks)", DefaultValueFactory = _ => "gpu" };
    static readonly Option<bool> CalibrateOpt = new("--calibrate") { Description = "With --device cpu: time train's own step (its schedule, collectives and optimizer) at D = min(4, layers per stage) and D / 2 layers per stage and the MPI collectives at the run's shapes; predict train's step (--model = a train preset, --micro-batch = train's --batch-size, --batch = global sequences) and, for train's layout (--tp/--cp/--pp/--dp/--zero, under the same mpirun), the bytes each group sends per step" };
    static readonly Option<bool> CalibrationOpt = new("--calibration") { Description = "Print every published run (docs/planning.md) predicted vs published, with its error" };
    static readonly Option<bool> BreakdownOpt = new("--breakdown") { Description = "With --calibration: also print where each row's predicted step goes (% of the step: GEMM, attention, memory-bound, bubble, each exposed collective, optimizer; TP before overlap)" };

    public static Command Create()
    {
        var cmd = new Command("plan", "Predict a training run on N GPUs: memory, step time, MFU, days, failures, checkpointing, energy and cost");
        HelpExamples.Add(cmd, "plan --model gpt4-class-1.8t --gpus 100000 --tokens 1e12 --batch 12288 --search");
        foreach (var o in new Option[] { Model, Layers, Hidden, Heads, KvHeads, Ffn, Vocab, Experts, ActiveExperts, MoeEveryOpt, Seq, Tokens, Batch, BatchTokens, PrecisionOpt,
                     Gpu, Gpus, GpusPerNode, GpuTflops, GpuMemory, GpuTdp, IntraGBs, IntraLatency, InterGbps, InterLatency, ComputeEff, NvlinkEff, NetEff, IntraCommSm, InterCommSm,
                     Tp, Pp, Dp, Cp, Ep, MicroBatch, Interleave, Zero, RecomputeOpt, UnevenEnds, NoSequenceParallel, AttentionOpt, PipelineEngineOpt, SearchOpt, Top, TpOverlap, TpAsyncBackward, UserbuffersOpt, CpOverlap, EpOverlap, DpOverlap,
                     FailureRate, CkptGBs, Restart, NodeOverhead, Pue, PriceGpuHour, PriceGpu, PriceKwh, Carbon, SweepOpt, Svg, Json, CalibrationOpt, BreakdownOpt, DeviceOpt, CalibrateOpt })
            cmd.Options.Add(o);
        cmd.SetAction(parse =>
        {
            string device = parse.GetValue(DeviceOpt)!.ToLowerInvariant();
            if (device is not ("gpu" or "cpu")) throw new BadInputException($"--device '{device}' is unknown: expected gpu or cpu");
            if (parse.GetValue(CalibrateOpt) != (device == "cpu"))
                throw new BadInputException(device == "cpu" ? "--device cpu plans our own engine: add --calibrate (it measures this machine)" : "--calibrate measures this machine: add --device cpu");
            if (device == "cpu") return CalibrateCpu(parse);
            if (parse.GetValue(BreakdownOpt) && !parse.GetValue(CalibrationOpt))
                throw new BadInputException("--breakdown splits the published runs' predicted steps: add --calibration");
            if (parse.GetValue(CalibrationOpt))
            {
                var rows = CalibrationTable.Rows();
                PlanReport.WriteCalibration(Console.Out, rows);
                if (parse.GetValue(BreakdownOpt))
                {
                    Console.WriteLine();
                    PlanReport.WriteCalibrationBreakdown(Console.Out, rows);
                }
                return 0;
            }
            var inputs = BuildInputs(parse);
            bool json = parse.GetValue(Json);
            if (parse.GetValue(SweepOpt) is { } sweepText)
            {
                var (from, to) = Sweep.ParseRange(sweepText);
                var points = Sweep.Run(inputs, from, to);
                string svgPath = parse.GetValue(Svg)!;
                File.WriteAllText(svgPath, SvgChart.Render($"{inputs.Model.Name} on {inputs.Cluster.Gpu.Name}: {inputs.Run.Tokens:G3} tokens", "GPUs (log scale)",
                [
                    new("Wall-clock time", "days", "#1f77b4", points.Where(p => p.Best is not null).Select(p => ((double)p.Gpus, p.Best!.WallClockDays)).ToList()),
                    new("MFU", "%", "#d62728", points.Where(p => p.Best is not null).Select(p => ((double)p.Gpus, p.Best!.Mfu * 100)).ToList()),
                    new("Goodput", "%", "#2ca02c", points.Where(p => p.Best is not null).Select(p => ((double)p.Gpus, p.Best!.Reliability.Goodput * 100)).ToList()),
                ]));
                if (json) Console.WriteLine(JsonSerializer.Serialize(new { sweep = points, svg = svgPath, assumptions = Assumptions.For(inputs) }, JsonOptions));
                else PlanReport.WriteSweep(Console.Out, inputs, points, svgPath);
                return 0;
            }
            if (parse.GetValue(SearchOpt))
            {
                var result = LayoutSearch.Search(inputs, Math.Max(1, parse.GetValue(Top)));
                if (json) Console.WriteLine(JsonSerializer.Serialize(new { search = result, assumptions = Assumptions.For(inputs) }, JsonOptions));
                else PlanReport.WriteSearch(Console.Out, inputs, result);
                return result.Best is null ? 1 : 0;
            }
            var plan = Planner.Plan(inputs);
            if (json) Console.WriteLine(JsonSerializer.Serialize(new { plan, assumptions = Assumptions.For(inputs) }, JsonOptions));
            else PlanReport.WritePlan(Console.Out, inputs, plan);
            return 0;
        });
        return cmd;
    }

    /// <summary><c>plan --device cpu --calibrate</c>: every rank measures (concurrently, sharing the machine as train's ranks do); rank 0 reports.</summary>
    static int CalibrateCpu(ParseResult parse)
    {
        CliRunner.LoadTorch(parse);
        var env = Distributed.LaunchEnvironment.Detect();
        if (Environment.GetEnvironmentVariable("OMPI_COMM_WORLD_LOCAL_SIZE") is { } ls && int.TryParse(ls, out int local) && local > 1)
            TorchSharp.torch.set_num_threads(Math.Max(1, Environment.ProcessorCount / local)); // as train: ranks on one node share its cores
        var preset = Supercluster.Model.ModelPresets.Get(parse.GetValue(Model)!);
        var config = (preset with
        {
            VocabSize = parse.GetValue(Vocab) ?? preset.VocabSize,
            NLayer = parse.GetValue(Layers) ?? preset.NLayer,
            NEmbd = parse.GetValue(Hidden) ?? preset.NEmbd,
            NHead = parse.GetValue(Heads) ?? preset.NHead,
            NKvHead = parse.GetValue(KvHeads) ?? (parse.GetValue(Heads) is { } hh && preset.NKvHead == preset.NHead ? hh : preset.NKvHead),
            FfnHidden = parse.GetValue(Ffn) ?? (parse.GetValue(Hidden) is { } he && preset.Family == Supercluster.Model.ModelFamily.Gpt2 ? 4 * he : preset.FfnHidden),
        }).Validate("plan --device cpu");
        int seq = parse.GetValue(Seq) ?? config.SeqLen;
        int mb = parse.GetValue(MicroBatch);
        int Explicit(Option<int> o, int trainDefault) => parse.GetResult(o) is { Implicit: false } ? parse.GetValue(o) : trainDefault;
        int zero = Explicit(Zero, 0); // train's defaults: no ZeRO, no model parallelism
        int tp = Explicit(Tp, 1), cp = Explicit(Cp, 1), pp = Explicit(Pp, 1);
        if (seq <= 0 || seq > config.SeqLen) throw new BadInputException($"--seq {seq} must be in 1..{config.SeqLen} (the model context)");
        if (mb <= 0) throw new BadInputException($"--micro-batch {mb} must be a positive integer");
        if (zero is < 0 or > 3) throw new BadInputException($"--zero {zero}: train supports 0, 1, 2 and 3");
        using var comm = Distributed.Communicators.Create("auto", false, env);
        var dims = Parallelism.ParallelDims.For(comm.WorldSize, tp, cp, pp, parse.GetValue(Dp));
        config = config with { PadVocabMultiple = Parallelism.Parallelize.PadVocabMultiple(config.PadVocabMultiple, tp) };   // as train pads for TP
        bool sp = tp > 1 && !parse.GetValue(NoSequenceParallel);
        long perStep = (long)mb * dims.Dp;
        long batch = parse.GetValue(Batch) ?? perStep;
        if (batch <= 0 || batch % perStep != 0)
            throw new BadInputException($"--batch {batch} is not a multiple of --micro-batch × data-parallel ranks = {mb} × {dims.Dp}");
        // The volume needs no measurement; the step is train's own, timed here at min(4, layers per stage) and half that (CpuCalibration)
        // for DP, ZeRO 0-3, TP and PP; context parallelism gets its volume only.
        var communicationBytes = CommunicationVolume.Engine(config, mb, seq, batch / perStep, tp, cp, pp, dims.Dp, zero, sp);
        string layout = $"{dims}{(sp ? " + SP" : "")}, ZeRO-{zero}";
        bool timed = cp == 1;
        if (timed && pp > 1) Parallelism.PipelineStage.Validate(pp, config.NLayer, 1);   // train's refusals, before anything is timed
        if (timed && pp > 1) Parallelism.PipelineSchedule.ValidateMicroBatches(pp, 1, (int)(batch / perStep));
        var measured = timed ? CpuCalibration.Measure(config, mb, seq, (int)(batch / perStep), comm, tp, pp, zero, sp) : null;
        var predicted = measured is null ? null : CpuCalibration.Predict(config, mb, seq, measured, sp);
        if (comm.Rank != 0) return 0;
        if (parse.GetValue(Json)) Console.WriteLine(JsonSerializer.Serialize(new { layout, measured, predicted, communicationBytes }, JsonOptions));
        else
        {
            if (measured is not null) PlanReport.WriteCpuCalibration(Console.Out, parse.GetValue(Model)!, config, mb, seq, layout, measured, predicted!);
            else Console.WriteLine($"step time: not modelled with context parallelism; {layout} gets its communication volume:");
            PlanReport.WriteCommunicationVolume(Console.Out, layout, communicationBytes);
        }
        return 0;
    }

    static readonly JsonSerializerOptions JsonOptions = new()
    {
        WriteIndented = true,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.CamelCase) },
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
    };

    /// <summary>--userbuffers PROJ,FC2[,aggregate]: SMs kept from the two row-parallel forward GEMMs, and ring-exchange aggregation.</summary>
    static UserbufferOverlap ParseUserbuffers(string text)
    {
        var f = text.Split(',', StringSplitOptions.TrimEntries);
        bool aggregate = f.Length == 3 && f[2].Equals("aggregate", StringComparison.OrdinalIgnoreCase);
        if ((f.Length != 2 && !aggregate) || !int.TryParse(f[0], out int proj) || !int.TryParse(f[1], out int fc2) || proj < 0 || fc2 < 0)
            throw new BadInputException($"--userbuffers '{text}' is not PROJ,FC2[,aggregate]: expected two SM counts ≥ 0, e.g. 24,16 or 24,8,aggregate");
        return new UserbufferOverlap(proj, fc2, aggregate);
    }

    static PlanInputs BuildInputs(ParseResult parse)
    {
        var preset = ModelCatalog.Get(parse.GetValue(Model)!);
        var model = preset with
        {
            Layers = parse.GetValue(Layers) ?? preset.Layers,
            Hidden = parse.GetValue(Hidden) ?? preset.Hidden,
            Heads = parse.GetValue(Heads) ?? preset.Heads,
            KvHeads = parse.GetValue(KvHeads) ?? parse.GetValue(Heads) ?? preset.KvHeads,
            Ffn = parse.GetValue(Ffn) ?? preset.Ffn,
            Vocab = parse.GetValue(Vocab) ?? preset.Vocab,
            Experts = parse.GetValue(Experts) ?? preset.Experts,
            ActiveExperts = parse.GetValue(ActiveExperts) ?? (parse.GetValue(Experts) is 1 ? 1 : preset.ActiveExperts),
            MoeEvery = parse.GetValue(MoeEveryOpt) ?? preset.MoeEvery,
        };
        model.Validate();

        int seq = parse.GetValue(Seq) ?? model.DefaultSeqLen;
        if (seq <= 0) throw new BadInputException($"--seq {seq} must be a positive integer");
        long batchTokens = parse.GetValue(BatchTokens);
        long? batch = parse.GetValue(Batch);
        if (batch is null)
        {
            if (batchTokens <= 0) throw new BadInputException($"--batch-tokens {batchTokens} must be positive");
            if (batchTokens % seq != 0) throw new BadInputException($"--batch-tokens {batchTokens} is not divisible by --seq {seq}: expected whole sequences");
            batch = batchTokens / seq;
        }
        var precision = parse.GetValue(PrecisionOpt)!.ToLowerInvariant() switch
        {
            "bf16" => Precision.Bf16,
            "fp16" => Precision.Fp16,
            "fp8" => Precision.Fp8,
            var other => throw new BadInputException($"--precision '{other}' is unknown: expected bf16, fp16 or fp8"),
        };
        var attention = parse.GetValue(AttentionOpt)!.ToLowerInvariant() switch
        {
            "flash" => AttentionKernel.Flash,
            "unfused" => AttentionKernel.Unfused,
            var other => throw new BadInputException($"--attention '{other}' is unknown: expected flash or unfused"),
        };
        var engine = parse.GetValue(PipelineEngineOpt)!.ToLowerInvariant() switch
        {
            "megatron" => PipelineEngine.Megatron,
            "deepspeed" => PipelineEngine.DeepSpeed,
            var other => throw new BadInputException($"--pipeline-engine '{other}' is unknown: expected megatron or deepspeed"),
        };
        var run = new TrainingRun(seq, parse.GetValue(Tokens), batch.Value, precision, attention, engine,
            Userbuffers: parse.GetValue(UserbuffersOpt) is { } ub ? ParseUserbuffers(ub) : null);
        run.Validate();

        var gpu = GpuCatalog.Get(parse.GetValue(Gpu)!);
        if (parse.GetValue(GpuTflops) is { } tf)
        {
            if (!(tf > 0)) throw new BadInputException($"--gpu-tflops {tf} must be positive");
            gpu = precision switch { Precision.Bf16 => gpu with { Bf16Tflops = tf }, Precision.Fp16 => gpu with { Fp16Tflops = tf }, _ => gpu with { Fp8Tflops = tf } };
        }
        if (parse.GetValue(GpuMemory) is { } mem)
            gpu = mem > 0 ? gpu with { MemoryGB = mem } : throw new BadInputException($"--gpu-memory-gb {mem} must be positive");
        if (parse.GetValue(GpuTdp) is { } tdp)
            gpu = tdp >= 0 ? gpu with { TdpWatts = tdp } : throw new BadInputException($"--gpu-tdp-w {tdp} must not be negative");

        var cluster = new ClusterSpec(gpu, parse.GetValue(Gpus), parse.GetValue(GpusPerNode), parse.GetValue(IntraGBs), parse.GetValue(IntraLatency),
            parse.GetValue(InterGbps) / 8, parse.GetValue(InterLatency), parse.GetValue(ComputeEff), parse.GetValue(NvlinkEff), parse.GetValue(NetEff),
            parse.GetValue(IntraCommSm), parse.GetValue(InterCommSm));
        cluster.Validate();

        var recompute = parse.GetValue(RecomputeOpt)!.ToLowerInvariant() switch
        {
            "none" => Recompute.None,
            "selective" => Recompute.Selective,
            "full" => Recompute.Full,
            var other => throw new BadInputException($"--recompute '{other}' is unknown: expected none, selective or full"),
        };
        int tp = parse.GetValue(Tp), pp = parse.GetValue(Pp), cp = parse.GetValue(Cp);
        if (tp <= 0) throw new BadInputException($"--tp {tp} must be a positive integer");
        if (pp <= 0) throw new BadInputException($"--pp {pp} must be a positive integer");
        if (cp <= 0) throw new BadInputException($"--cp {cp} must be a positive integer");
        int dp;
        if (parse.GetValue(Dp) is { } explicitDp) dp = explicitDp;
        else if (parse.GetValue(SearchOpt) || parse.GetValue(SweepOpt) is not null) dp = 1;
        else
        {
            long slice = (long)tp * pp * cp;
            if (cluster.Gpus % slice != 0)
                throw new BadInputException($"--gpus {cluster.Gpus} is not divisible by TP·PP·CP = {tp}·{pp}·{cp} = {slice}: expected a whole data-parallel size (or pass --dp)");
            dp = (int)(cluster.Gpus / slice);
        }
        var layout = new ParallelLayout(tp, pp, dp, cp, parse.GetValue(Ep), parse.GetValue(MicroBatch), parse.GetValue(Interleave), parse.GetValue(Zero), recompute,
            SequenceParallel: !parse.GetValue(NoSequenceParallel), UnevenEnds: parse.GetValue(UnevenEnds));

        if (run.Userbuffers is not null && (tp < 2 || !layout.SequenceParallel))
            throw new BadInputException($"--userbuffers needs --tp ≥ 2 with sequence parallelism (TE overlaps the sequence-parallel all-gathers and reduce-scatters): got --tp {tp}{(layout.SequenceParallel ? "" : " --no-sequence-parallel")}");
        var overlap = new OverlapAssumptions(run.Userbuffers is null ? parse.GetValue(TpOverlap) : 1, parse.GetValue(CpOverlap), parse.GetValue(EpOverlap), parse.GetValue(DpOverlap),
            parse.GetValue(TpAsyncBackward));
        foreach (var (v, n) in new[] { (overlap.TensorParallel, "--tp-overlap"), (overlap.ContextParallel, "--cp-overlap"), (overlap.ExpertAllToAll, "--ep-overlap"), (overlap.DataParallel, "--dp-overlap") })
            if (!(v >= 0 && v <= 1)) throw new BadInputException($"{n} {v} must be a fraction in [0, 1]");

        var ops = new OperationsSpec(parse.GetValue(NodeOverhead), parse.GetValue(Pue), parse.GetValue(PriceGpuHour), parse.GetValue(PriceGpu),
            parse.GetValue(PriceKwh), parse.GetValue(Carbon), parse.GetValue(FailureRate), parse.GetValue(CkptGBs), parse.GetValue(Restart));
        ops.Validate();
        return new PlanInputs(model, run, cluster, layout, overlap, ops);
    }
}
