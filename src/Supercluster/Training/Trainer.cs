using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using Supercluster.Checkpointing;
using Supercluster.Data;
using Supercluster.Distributed;
using Supercluster.Inference;
using Supercluster.Model;
using Supercluster.Parallelism;
using Supercluster.Runtime;
using Supercluster.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

namespace Supercluster.Training;

public sealed record TrainResult(string RunDir, int Steps, double FinalLoss, double? FinalValLoss, double TokensPerSecond, string? LastCheckpoint);

/// <summary>
/// The training loop: warmup + cosine schedule, one <see cref="TrainStep"/> per optimizer step (gradient accumulation,
/// data-parallel averaging, clipping, the optimizer), periodic eval, samples and checkpoints, exact resume. One rank or
/// many: the model never knows; logs and metrics come from rank 0.
/// </summary>
public sealed class Trainer
{
    readonly TrainOptions _o;
    readonly TextWriter _log;

    public Trainer(TrainOptions options, TextWriter log)
    {
        options.Validate();
        _o = options;
        _log = log;
    }

    public TrainResult Run()
    {
        var env = LaunchEnvironment.Detect();
        var device = DeviceSelect.Resolve(_o.Device);
        if (device.type == DeviceType.CUDA && env.WorldSize > 1) device = new Device(DeviceType.CUDA, env.LocalRank);
        var dtype = DeviceSelect.Dtype(_o.Dtype);
        if (device.type == DeviceType.CUDA) torch.backends.cuda.matmul.allow_tf32 = true; // fp32 matmuls on tensor cores
        if (device.type == DeviceType.CPU && Environment.GetEnvironmentVariable("OMPI_COMM_WORLD_LOCAL_SIZE") is { } ls && int.TryParse(ls, out int local) && local > 1)
            torch.set_num_threads(Math.Max(1, Environment.ProcessorCount / local)); // ranks on one node share its cores
        using var comm = Communicators.Create(_o.Backend, device.type == DeviceType.CUDA, env);
        bool lead = comm.Rank == 0;
        var log = lead ? _log : TextWriter.Null;

        var dims = ParallelDims.For(comm.WorldSize, _o.Tp, _o.Cp, _o.Pp, _o.Dp);   // EP is checked against the model below, then joins the grid
        var meta = DatasetMeta.Load(_o.DataDir);
        var init = _o.InitFrom is null ? null : FineTuning.InitCheckpoint.Open(_o.InitFrom, meta);   // refuses another tokenizer
        // TP splits the vocabulary tables: their rows are padded to a multiple of TP as well (Megatron-LM does the same).
        var config = (init?.Config ?? BuildConfig(meta)) with { PadVocabMultiple = Parallelize.PadVocabMultiple(_o.PadVocab ?? DefaultPadVocab(device), _o.Tp) };
        if (_o.PadVocab is { } pv && pv % _o.Tp != 0)
            throw new BadInputException($"--pad-vocab {pv} with --tp {_o.Tp}: expected a multiple of {_o.Tp} (each TP rank holds an equal share of the vocabulary rows)");
        int seqLen = _o.SeqLen ?? meta.Chat?.SeqLen ?? config.SeqLen;
        if (meta.Chat is { } chat && seqLen != chat.SeqLen)
            throw new BadInputException($"--seq-len {seqLen}: {_o.DataDir} packs conversations into sequences of {chat.SeqLen} tokens (prepare --seq-len); train with --seq-len {chat.SeqLen}");
        if (meta.Chat is not null && dims.World != dims.Dp)
            throw new BadInputException($"--tp {dims.Tp} --cp {dims.Cp} --pp {dims.Pp} on loss-masked chat data ({_o.DataDir}): fine-tuning runs with data parallelism only in this build; expected --tp 1 --cp 1 --pp 1");
        if (_o.LoraRank > 0 && dims.World != dims.Dp)
            throw new BadInputException($"--lora-rank {_o.LoraRank} with --tp {dims.Tp} --cp {dims.Cp} --pp {dims.Pp}: LoRA runs with data parallelism only in this build; expected --tp 1 --cp 1 --pp 1");
        if (seqLen > config.SeqLen)
            throw new BadInputException($"--seq-len {seqLen} exceeds the model context {config.SeqLen} of '{_o.Model}'");
        // Task files are read and rendered on every rank before anything is written (a bad one stops all); rank 0 scores them.
        var tasks = Evaluation.TaskSet.Files(_o.EvalTask).Select(f => Evaluation.TaskEval.Render(Evaluation.TaskSet.Load(f, _o.EvalTaskLimit), Tokenizers.Create(meta.Tokenizer), config.SeqLen)).ToList();
        Parallelize.Validate(config, dims, _o.SequenceParallel, seqLen);
        if (_o.Tp > 1 && tasks.Count > 0)
            throw new BadInputException($"--eval-task with --tp {_o.Tp}: task scoring runs the whole model on one rank; expected no --eval-task (score a checkpoint with `eval --task`)");
        if (_o.Tp > 1 && _o.SampleEvery > 0)
            throw new BadInputException($"--sample-every {_o.SampleEvery} with --tp {_o.Tp}: samples need the whole model on one rank; expected 0 (sample from a checkpoint with `sample`)");

        // Every rank of one data-parallel replica (its TP, CP and PP ranks) works on the same micro-batches.
        long tokensPerMicro = (long)_o.BatchSize * seqLen;
        long perStepAllRanks = tokensPerMicro * dims.Dp;
        long total = _o.TotalBatchTokens ?? perStepAllRanks;
        if (total % perStepAllRanks != 0)
            throw new BadInputException(dims.Dp == comm.WorldSize
                ? $"--total-batch-tokens {total} is not a multiple of batch-size × seq-len × world size = {_o.BatchSize} × {seqLen} × {comm.WorldSize} = {perStepAllRanks}"
                : $"--total-batch-tokens {total} is not a multiple of batch-size × seq-len × data-parallel size = {_o.BatchSize} × {seqLen} × {dims.Dp} = {perStepAllRanks}");
        if (dims.Pp > 1 || _o.Interleave > 1) PipelineStage.Validate(dims.Pp, config.NLayer, _o.Interleave);
        int accum = (int)(total / perStepAllRanks);
        if (dims.Pp > 1) PipelineSchedule.ValidateMicroBatches(dims.Pp, _o.Interleave, accum);
        // MoE: experts sharded over the EP group (EP inside DP); each rank builds only its experts (Parallelism/ExpertParallel.cs).
        if (_o.Ep > 1 && !config.IsMoE) throw new BadInputException($"--ep {_o.Ep}: model '{_o.Model}' has no experts; expected --experts E (E > 1) or an MoE preset");
        if (config.IsMoE && config.Experts % _o.Ep != 0) throw new BadInputException($"--ep {_o.Ep} does not divide --experts {config.Experts}: expected a divisor of the expert count");
        if (_o.Ep > 1 && comm.WorldSize == 1) throw new BadInputException($"--ep {_o.Ep} needs {_o.Ep} or more ranks: this job has one (launch with mpirun -np N, N a multiple of {_o.Ep})");
        dims = ParallelDims.For(comm.WorldSize, _o.Tp, _o.Cp, _o.Pp, _o.Dp, _o.Ep);
        using var grid = new RankGrid(comm, dims);
        bool evalRank = grid.DpRank == 0 && grid.PpRank == 0;   // rank 0's TP × CP group evaluates together

        Directory.CreateDirectory(_o.OutDir);
        using var runLock = lead ? RunLock.Acquire(_o.OutDir, log.WriteLine) : null;   // one job per run directory (exit 2 naming the holder)
        var store = new CheckpointStore(_o.OutDir);
        string? resumeDir = FindResume(store, log);

        using var train = new TokenDataLoader(_o.DataDir, "train", _o.BatchSize, seqLen, grid.DpRank, dims.Dp, _o.Seed);
        // Under expert parallelism a forward is collective (all-to-all), so every rank evaluates and samples with rank 0.
        bool inferHere = lead || _o.Ep > 1;
        using var val = meta.ValTokens > 0 && (inferHere || ((dims.Tp > 1 || dims.Cp > 1) && evalRank) || dims.Pp > 1) ? Evaluator.OpenRows(_o.DataDir, "val", seqLen) : null;
        var tokenizer = Tokenizers.Create(meta.Tokenizer);

        if (config.IsMoE && (dims.Tp > 1 || dims.Cp > 1 || dims.Pp > 1 || _o.LoraRank > 0))
            throw new BadInputException($"--experts {config.Experts} with --tp {dims.Tp} --cp {dims.Cp} --pp {dims.Pp}{(_o.LoraRank > 0 ? " and LoRA" : "")}: mixture-of-experts models compose with data and expert parallelism only in this build");
        if (_o.InitFrom is not null && config.IsMoE && init?.Config is null)
            throw new BadInputException($"--init-from {_o.InitFrom}: Hugging Face GPT-2 weights have no experts; expected a dense model (drop --experts {config.Experts})");

        using var baseModel = CausalLM.Create(config, _o.Seed, config.IsMoE ? new ExpertShard(grid.EpRank, _o.Ep) : null);
        if (config.IsMoE) Parallelism.ExpertParallel.Apply(baseModel, grid.Ep, _o.CapacityFactor);
        var lora = _o.LoraRank > 0 ? new FineTuning.LoraOptions(_o.LoraRank, _o.LoraAlpha, FineTuning.LoraOptions.ParseTargets(_o.LoraTargets), _o.LoraDropout) : null;
        // Weights are loaded into the fp32 model before the step makes them its master copy (and bf16 compute weights).
        // A LoRA run's base always comes from --init-from; its checkpoints hold the adapters only.
        if (init is not null && (resumeDir is null || lora is not null)) ModelCheckpoint.LoadWeights(baseModel, init.WeightsFile);
        CausalLM model = lora is null ? baseModel : new FineTuning.LoraModel(baseModel, lora, _o.Seed);
        if (resumeDir is not null && model is FineTuning.LoraModel resumed)
            FineTuning.PeftAdapter.LoadInto(resumed, FineTuning.PeftAdapter.Read(resumeDir), resumeDir);
        else if (resumeDir is not null) LoadResumeWeights(resumeDir, model, config);
        // Model parallelism is applied to the full, loaded model: each rank keeps its shards (layout-free checkpoints).
        var parallel = Parallelize.Apply(model, grid, new ParallelizeOptions(_o.SequenceParallel));
        model.to(device);
        model.train();
        var stages = dims.Pp > 1 ? PipelineStage.ForRank(model, grid.Pp, parallel, _o.Interleave) : null;   // this rank's stage (its chunks when interleaved)
        var stage = stages?[0];
        using var trainStep = new TrainStep(model, comm, new TrainStepOptions
        {
            BatchSize = _o.BatchSize, SeqLen = seqLen, Zero = _o.Zero, WeightDecay = _o.WeightDecay, GradClip = _o.GradClip,
            Optimizer = _o.Optimizer, ComputeDtype = dtype, AuxLossCoef = _o.AuxLossCoef, ZLossCoef = _o.ZLossCoef,
        }, parallel, stages, config.IsMoE ? (grid.Ep, grid.ExpertDp) : null);

        var startMemory = trainStep.MemoryPerRank();   // measured: bytes of the allocations behind them, before the first step
        long startStep = 0, tokensSeen = 0;
        if (resumeDir is not null) (startStep, tokensSeen) = Restore(resumeDir, trainStep, parallel, train);
        if (resumeDir is not null) trainStep.Experts?.Load(resumeDir);
        if (lead)
            DurableFile.WriteAllText(Path.Combine(_o.OutDir, "config.json"), JsonSerializer.Serialize(new
            {
                options = _o, model = config, dataset = meta, gradient_accumulation = accum, seq_len = seqLen, world_size = comm.WorldSize, backend = comm.Backend,
                memory_per_rank = new { zero = _o.Zero, parameters = startMemory.Parameters, gradients = startMemory.Gradients, optimizer_state = startMemory.Optimizer },
            }, ModelConfig.Json));

        var schedule = new LrSchedule(_o.Lr, _o.Warmup ?? Math.Min(100, _o.Steps / 10), _o.Steps, _o.MinLrRatio);
        var fault = FaultPlan.Parse(_o.Fault);
        double flopsPerToken = Planning.FlopsModel.ModelFlopsPerToken(config, seqLen);
        double? peak = DeviceSelect.PeakFlops(device, dtype);
        var mem = startMemory;
        log.WriteLine($"model {_o.Model}: {config.ParameterCount():N0} parameters, {config.NLayer} layers, d={config.NEmbd}, context {config.SeqLen}, vocab {config.VocabSize}{(config.PaddedVocab != config.VocabSize ? $" (tables padded to {config.PaddedVocab})" : "")}; {device.type} {_o.Dtype}");
        if (config.IsMoE) log.WriteLine(Parallelism.ExpertParallel.Describe(config, seqLen, _o.Ep, _o.CapacityFactor));
        log.WriteLine($"ranks: {comm.WorldSize} ({comm.Backend}{(comm.WorldSize > 1 ? $", launched by {env.Launcher}" : "")}){(_o.Zero > 0 ? $", ZeRO-{_o.Zero}" : "")}; per rank (measured): parameters {Mb(mem.Parameters)}, gradients {Mb(mem.Gradients)}, optimizer state {Mb(mem.Optimizer)}");
        if (dims.World > 1) foreach (var line in RankGrid.Describe(dims)) log.WriteLine(line);
        if (_o.SequenceParallel)
            log.WriteLine($"sequence parallel: saves {Mb((long)(SequenceParallel.ActivationSavingBytes(config, seqLen, _o.BatchSize, dims) * (dtype == ScalarType.Float32 ? 2 : 1)))} of activations per micro-batch per rank (Korthikanti et al. 2022 Table 2: 10·s·b·h·(1 − 1/t) per layer)");
        log.WriteLine($"global batch = {_o.BatchSize} sequences × {seqLen} tokens × {accum} accumulation × {dims.Dp} {(dims.Dp == comm.WorldSize ? "ranks" : "data-parallel replicas")} = {total:N0} tokens/step; {_o.Steps} steps; lr {_o.Lr} (warmup {schedule.WarmupSteps}, cosine to {_o.Lr * _o.MinLrRatio:G3})");
        log.WriteLine($"optimizer: {trainStep.Optimizer.Describe()}; {trainStep.Optimizer.Groups.Describe()}");
        if (stage is not null) PrintPipeline(log, grid, model, accum);
        if (resumeDir is not null) log.WriteLine($"resumed from {resumeDir} at step {startStep}");
        else if (init is not null) log.WriteLine($"initialised from {init.Source}{(init.Config is null ? "" : " (architecture from its config.json)")}; optimizer and step start fresh");
        if (model is FineTuning.LoraModel lm)
        {
            long full = baseModel.parameters().Sum(p => p.numel()), trainable = trainStep.Flat.Count;
            double perParameter = (double)mem.Optimizer / trainStep.DataParallel.ShardRange.Length;   // optimizer bytes per element this rank holds
            log.WriteLine($"LoRA r={lora!.Rank} α={lora.Alpha} on {string.Join(",", lora.Targets)} ({lm.adapters.Count} matrices): trainable {trainable:N0} of {full + trainable:N0} parameters ({100.0 * trainable / full:F2} % of the base); " +
                $"per rank: optimizer state {Mb(mem.Optimizer)} vs {Mb((long)(perParameter * full / (_o.Zero == 1 ? comm.WorldSize : 1)))} for full fine-tuning, gradients {Mb(mem.Gradients)} vs {Mb(full * 4)}");
        }
        if (init is not null && resumeDir is null && val is not null)
        {
            var start = Evaluator.Evaluate(model, val, _o.BatchSize, seqLen, _o.EvalTokens, device);   // where fine-tuning starts
            using var startMetrics = new StreamWriter(Path.Combine(_o.OutDir, "metrics.jsonl"), append: false);
            startMetrics.WriteLine(new JsonObject { ["type"] = "eval", ["step"] = 0, ["val_loss"] = start.Loss, ["time_s"] = 0.0 }.ToJsonString());
            log.WriteLine($"step 0: val loss {start.Loss:F4} over {start.Tokens:N0} tokens");
        }

        using var metrics = lead ? new MetricsLog(Path.Combine(_o.OutDir, "metrics.jsonl"), startStep) : null;
        var heartbeat = Heartbeat.FromEnvironment(comm.Rank);
        heartbeat?.Beat(startStep);
        using var stop = StopSignal.Listen(log);   // SIGTERM/SIGINT: finish the step, checkpoint, exit 0
        long reached = startStep;
        var progress = new ProgressLine(lead ? null : TextWriter.Null);
        var clock = Stopwatch.StartNew();
        long tokensThisRun = 0;
        double lastLoss = double.NaN, tokPerSec = 0;
        double? lastVal = null;
        string? lastCheckpoint = null;

        var phases = new PhaseClock();
        double previousEnd = double.NaN;   // ms on `clock` when the previous step's Run returned: the gap is train's between-step work
        for (long step = startStep; step < _o.Steps; step++)
        {
            double between = clock.Elapsed.TotalMilliseconds - previousEnd;
            var jitBefore = System.Runtime.JitInfo.GetCompilationTime();   // all threads: the runtime's background re-JIT included
            var stepClock = Stopwatch.StartNew();
            phases.Start();
            double lr = schedule.At((int)step);
            var stepResult = train.HasLossMask ? trainStep.RunMasked(train.NextBatch, accum, lr, documentEnd: meta.EotToken, phases) : trainStep.Run(train.NextBatch, accum, lr, phases);
            previousEnd = clock.Elapsed.TotalMilliseconds;
            double jitMs = (System.Runtime.JitInfo.GetCompilationTime() - jitBefore).TotalMilliseconds;
            var (loss, norm, commSeconds) = stepResult;
            if (stepResult.Skipped) { progress.Done(); log.WriteLine($"step {step + 1}: every target of the global batch is loss-masked (no assistant token); step skipped, no update"); }
            long done = step + 1;
            tokensSeen += total;
            tokensThisRun += total;
            double dt = stepClock.Elapsed.TotalSeconds;
            var (rankStepMs, rankCommMs, rankPhaseMs) = PerRankTimes(comm, dt, commSeconds, [.. phases.Milliseconds, between, jitMs]);
            heartbeat?.Beat(done);
            tokPerSec = tokensThisRun / clock.Elapsed.TotalSeconds;
            double? mfu = peak is { } p ? flopsPerToken * total / comm.WorldSize / dt / p : null;
            lastLoss = loss;
            metrics?.Write(new JsonObject
            {
                ["type"] = "train", ["step"] = done, ["loss"] = loss, ["lr"] = lr, ["grad_norm"] = norm, ["tokens"] = tokensSeen,
                ["tokens_per_s"] = Math.Round(total / dt, 1), ["step_ms"] = Math.Round(dt * 1000, 2), ["mfu"] = mfu, ["time_s"] = Math.Round(clock.Elapsed.TotalSeconds, 3),
                ["rank_step_ms"] = rankStepMs, ["rank_comm_ms"] = rankCommMs, ["rank_phase_ms"] = rankPhaseMs,
                ["comm_ms_by_group"] = dims.World > 1 ? CommByGroup(stepResult.CommSecondsByGroup) : null,
                ["comm_bytes_by_group"] = dims.World > 1 ? BytesByGroup(stepResult.CommBytesByGroup) : null,
                ["forward_resident_bytes"] = stepResult.ForwardResidentBytes > 0 ? stepResult.ForwardResidentBytes : null,
                ["moe"] = Parallelism.ExpertParallel.MetricsJson(stepResult),
            });
            var eta = TimeSpan.FromSeconds((_o.Steps - done) * clock.Elapsed.TotalSeconds / (done - startStep));
            progress.Update($"step {done}/{_o.Steps} | loss {loss:F4} | lr {lr:0.00e+0} | norm {norm:F2} | {tokPerSec:N0} tok/s{(mfu is { } m ? $" | MFU {m:P1}" : "")}{(comm.WorldSize > 1 ? $" | comm {commSeconds * 1000:F0} ms{CommShortForm(stepResult)}" : "")}{Parallelism.ExpertParallel.ShortForm(stepResult)} | ETA {ProgressLine.Format(eta)}",
                force: done == _o.Steps);

            bool last = done == _o.Steps;
            if (done == startStep + 1)   // between steps, after the first: what a rank keeps (ZeRO-2/3 free their full buffers by now)
                metrics?.Write(MemoryRecord(trainStep.MemoryPerRank(), done));
            // The second step's forward (the first also makes lasting allocations): beside the Korthikanti prediction printed at
            // start; bench/distributed-cpu.sh compares runs with and without --sequence-parallel.
            if (done == Math.Min(startStep + 2, _o.Steps) && dims.Tp > 1 && stepResult.ForwardResidentBytes > 0)
            {
                progress.Done();
                log.WriteLine($"activations of one micro-batch (measured: resident memory growth over its forward, rank 0): {Mb(stepResult.ForwardResidentBytes)}{(_o.SequenceParallel ? " with" : " without")} sequence parallelism");
            }
            bool evalDue = meta.ValTokens > 0 && ((_o.EvalEvery > 0 && done % _o.EvalEvery == 0) || last), sampleDue = _o.SampleEvery > 0 && (done % _o.SampleEvery == 0 || last);
            var whole = evalDue || sampleDue ? trainStep.Unsharded() : null;   // ZeRO-3: the model whole for rank 0's eval and sample (collective)
            if (val is not null && ((_o.EvalEvery > 0 && done % _o.EvalEvery == 0) || last))
            {
                var eval = trainStep.Pipeline is { } pipeline   // every stage takes part
                    ? Evaluator.Evaluate(pipeline.Loss, val, _o.BatchSize, seqLen, _o.EvalTokens)
                    : Evaluator.Evaluate(model, val, _o.BatchSize, seqLen, _o.EvalTokens, device, parallel.OwnsLoss ? parallel.MeanLoss : null);
                lastVal = eval.Loss;
                metrics?.Write(new JsonObject { ["type"] = "eval", ["step"] = done, ["val_loss"] = lastVal, ["time_s"] = Math.Round(clock.Elapsed.TotalSeconds, 3) });
                progress.Done();
                log.WriteLine($"step {done}: val loss {lastVal:F4} over {eval.Tokens:N0} tokens");
            }
            if (inferHere && stage is null && tasks.Count > 0 && ((_o.EvalEvery > 0 && done % _o.EvalEvery == 0) || last))
                foreach (var task in tasks)
                {
                    var (r, _) = Evaluation.TaskEval.Evaluate(model, task, _o.BatchSize, device);
                    metrics?.Write(Evaluation.TaskEval.MetricsRecord(r, done, clock.Elapsed.TotalSeconds));
                    progress.Done();
                    log.WriteLine($"step {done}: {Evaluation.TaskEval.Describe(r)}");
                }
            if (inferHere && stage is null && _o.SampleEvery > 0 && (done % _o.SampleEvery == 0 || last))
            {
                string text = SampleText(model, tokenizer, device, done);
                metrics?.Write(new JsonObject { ["type"] = "sample", ["step"] = done, ["text"] = text });
                progress.Done();
                log.WriteLine($"step {done} sample: {text.ReplaceLineEndings(" ")}");
            }
            whole?.Dispose();
            fault?.MaybeFire("sigterm", comm.Rank, done, _o.OutDir, _log);
            bool stopping = stop.ShouldStop(comm, device);
            if ((_o.CheckpointEvery > 0 && done % _o.CheckpointEvery == 0) || last || stopping)
                lastCheckpoint = store.Guard(done, () => SaveCheckpoint(store, comm, done, tokensSeen, model, trainStep, parallel, stage, train, tokenizer.Name, fault));
            // Step-end faults fire after this step's checkpoint, so a restart resumes from it.
            fault?.MaybeFire("kill", comm.Rank, done, _o.OutDir, _log);
            fault?.MaybeFire("hang", comm.Rank, done, _o.OutDir, _log);
            reached = done;
            if (stopping && !last) { progress.Done(); log.WriteLine(stop.Describe(done, _o.Steps, lastCheckpoint)); break; }
        }
        progress.Done();
        comm.Barrier();
        return new TrainResult(_o.OutDir, (int)reached, lastLoss, lastVal, tokPerSec, lastCheckpoint ?? store.Latest());
    }

    /// <summary>128 on a GPU (50257 → 50304 for GPT-2: the head's matmul on whole tensor-core tiles); a CPU gains nothing from it.</summary>
    public static int DefaultPadVocab(Device device) => device.type == DeviceType.CUDA ? 128 : 1;

    static string Mb(long bytes) => $"{bytes / 1e6:F1} MB";

    static JsonObject MemoryRecord((long Parameters, long Gradients, long Optimizer) m, long step) => new()
    {
        ["type"] = "memory", ["step"] = step, ["parameters_bytes"] = m.Parameters, ["gradients_bytes"] = m.Gradients, ["optimizer_state_bytes"] = m.Optimizer,
    };

    /// <summary>This rank's collective time per group in ms (groups of one rank left out).</summary>
    static JsonObject? CommByGroup(IReadOnlyDictionary<string, double>? seconds) => seconds is null ? null
        : new JsonObject(seconds.Where(kv => kv.Value > 0).Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)Math.Round(kv.Value * 1000, 2))));

    /// <summary>This rank's bytes sent per group in the step (groups that sent nothing left out).</summary>
    static JsonObject? BytesByGroup(IReadOnlyDictionary<string, double>? bytes) => bytes is null ? null
        : new JsonObject(bytes.Where(kv => kv.Value > 0).Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)Math.Round(kv.Value))));

    /// <summary>" (tp 12 ms 3.1 MB, dp_cp 4 ms 8.0 MB)": the step's collectives per group on this rank.</summary>
    static string CommShortForm(StepResult r)
    {
        if (r.CommSecondsByGroup is not { } s) return "";
        double Bytes(string g) => r.CommBytesByGroup?.GetValueOrDefault(g) ?? 0;
        var parts = s.Keys.Where(g => s[g] > 0 || Bytes(g) > 0).Select(g => $"{g} {s[g] * 1000:F0} ms {Bytes(g) / 1e6:F1} MB").ToList();
        return parts.Count == 0 ? "" : $" ({string.Join(", ", parts)})";
    }

    /// <summary>
    /// Every rank's step time, time in the step's collectives and phases (ms), gathered so a straggler shows up in rank 0's
    /// metrics. Collective time is the communicator's own measure (CUDA events on NCCL, not the host's enqueue time),
    /// taken by <see cref="TrainStep.Run"/>; the gather runs on the communicator's device. The phases are the step's
    /// (<see cref="PhaseClock"/>: data, forward, backward, optimizer — the last holds the gradient sync, clipping, the
    /// update and the loss read), "between", the time from the previous step's end to this one's start (the previous
    /// step's metrics, stop-flag all-reduce and this gather; NaN before the first), and "jit", the .NET runtime's
    /// compilation time during the step on all its threads (its background re-JIT of hot methods shares the cores with
    /// the step): what <c>plan --device cpu --calibrate</c>'s phases are compared with (bench/plan-vs-train.sh).
    /// </summary>
    static (JsonArray? Step, JsonArray? Comm, JsonObject Phases) PerRankTimes(ICommunicator comm, double stepSeconds, double commSeconds, double[] phaseMs)
    {
        double[] mine = [stepSeconds * 1000, commSeconds * 1000, .. phaseMs];
        double[] v = mine;
        if (comm.WorldSize > 1)
        {
            using var own = tensor(mine, device: comm.Device);
            using var all = zeros(mine.Length * comm.WorldSize, dtype: ScalarType.Float64, device: comm.Device);
            comm.AllGather(own, all);
            comm.TakeCommunicationSeconds();                 // this gather is bookkeeping, not the next step's communication
            comm.TakeSentBytes();
            using var host = all.cpu();
            v = host.data<double>().ToArray();
        }
        JsonArray Column(int k) => new(Enumerable.Range(0, comm.WorldSize).Select(r => v[r * mine.Length + k])
            .Select(x => (JsonNode?)(double.IsFinite(x) ? Math.Round(x, 2) : null)).ToArray());
        var phases = new JsonObject(PhaseNames.Select((name, k) => KeyValuePair.Create(name, (JsonNode?)Column(2 + k))));
        return comm.WorldSize == 1 ? (null, null, phases) : (Column(0), Column(1), phases);
    }

    /// <summary>rank_phase_ms's keys: <see cref="StepPhase"/> in order, the between-step time, the runtime's JIT time.</summary>
    public static readonly string[] PhaseNames = [.. Enum.GetNames<StepPhase>().Select(n => n.ToLowerInvariant()), "between", "jit"];

    ModelConfig BuildConfig(DatasetMeta meta)
    {
        var preset = ModelPresets.Get(_o.Model);
        var c = preset with
        {
            VocabSize = meta.VocabSize,
            NLayer = _o.NLayer ?? preset.NLayer,
            NHead = _o.NHead ?? preset.NHead,
            NKvHead = _o.NHead is { } h && preset.Family == ModelFamily.Gpt2 ? h : preset.NKvHead,
            NEmbd = _o.NEmbd ?? preset.NEmbd,
            FfnHidden = _o.NEmbd is { } e ? (preset.Family == ModelFamily.Gpt2 ? 4 * e : preset.FfnHidden * e / preset.NEmbd) : preset.FfnHidden,
            Experts = _o.Experts ?? preset.Experts,
            ActiveExperts = _o.ActiveExperts ?? (_o.Experts is 1 ? 1 : preset.ActiveExperts),
            MoeEvery = _o.MoeEvery ?? preset.MoeEvery,
        };
        if (c.ActiveExperts > c.Experts)
            throw new BadInputException($"--active-experts {c.ActiveExperts} exceeds --experts {c.Experts}: expected K ≤ E");
        if (!c.IsMoE && (_o.ActiveExperts is > 1 || _o.MoeEvery is not null || _o.CapacityFactor is not null))
            throw new BadInputException($"--active-experts/--moe-every/--capacity-factor: model '{_o.Model}' has {c.Experts} expert; expected --experts E with E > 1");
        return c.Validate($"--model {_o.Model}");
    }

    string? FindResume(CheckpointStore store, TextWriter log) => store.ResumePoint(_o.Resume, w => log.WriteLine(w));

    static void LoadResumeWeights(string dir, CausalLM model, ModelConfig config)
    {
        var saved = ModelCheckpoint.ReadConfig(dir);
        if (config.IsMoE && !saved.IsMoE)
            throw new BadInputException($"--experts {config.Experts}: checkpoint {dir} has no experts (a dense model); expected a checkpoint trained with --experts {config.Experts}, or drop the MoE flags");
        // Padding rows are not part of the model (checkpoints hold the real vocabulary), so a layout may pad differently.
        if (saved with { PadVocabMultiple = config.PadVocabMultiple } != config)
            throw new BadInputException($"{Path.Combine(dir, ModelCheckpoint.ConfigFile)}: checkpoint model config ({Describe(saved)}) does not match the requested model ({Describe(config)})");
        ModelCheckpoint.ReadState(dir);   // refuse a model-only checkpoint before anything is built
        ModelCheckpoint.LoadWeights(model, Path.Combine(dir, ModelCheckpoint.ModelFile));
    }

    /// <summary>Optimizer state, data position and RNG of a checkpoint (its weights are loaded by <see cref="LoadResumeWeights"/>).</summary>
    static (long Step, long Tokens) Restore(string dir, TrainStep trainStep, ParallelModel parallel, TokenDataLoader train)
    {
        var state = ModelCheckpoint.ReadState(dir);
        var optimizer = trainStep.Optimizer;
        LayoutFreeCheckpoint.LoadOptimizer(dir, trainStep, parallel);
        if (optimizer.StepCount != state.OptimizerSteps)
            throw new BadInputException($"{dir}: optimizer state is at step {optimizer.StepCount}, state.json says {state.OptimizerSteps}");
        train.Restore(state.Data);
        using var rng = tensor(Convert.FromBase64String(state.RngState), dtype: ScalarType.Byte);
        torch.random.set_rng_state(rng);
        return (state.Step, state.TokensSeen);
    }

    static string Describe(ModelConfig c) => $"{c.Family.ToString().ToLowerInvariant()} n_layer={c.NLayer} n_head={c.NHead} n_embd={c.NEmbd} vocab={c.VocabSize} pad_vocab={c.PadVocabMultiple} context={c.SeqLen}{(c.IsMoE ? $" experts={c.Experts} active={c.ActiveExperts} moe_every={c.MoeEvery}" : "")}";

    /// <summary>Rank 0 opens the temporary directory, every rank writes its optimizer shard, rank 0 writes the rest and commits.</summary>
    string? SaveCheckpoint(CheckpointStore store, ICommunicator comm, long step, long tokens, CausalLM model, TrainStep trainStep, ParallelModel parallel, PipelineStage? stage, TokenDataLoader train, string tokenizer, FaultPlan? fault)
    {
        string tmp = Path.Combine(store.Root, $".tmp-{CheckpointStore.DirName(step)}");
        if (comm.Rank == 0) tmp = store.BeginWrite(step);
        comm.Barrier();
        using var weightScope = torch.NewDisposeScope();
        IReadOnlyDictionary<string, Tensor>? weights;   // null on ranks that write nothing
        if (stage is null)
        {
            LayoutFreeCheckpoint.SaveOptimizer(tmp, trainStep, parallel);
            // Full tensors under Hugging Face names: TP shards are gathered (a collective over each TP group).
            weights = LayoutFreeCheckpoint.FullWeights(trainStep, parallel);
        }
        else
        {
            PipelineCheckpoint.SaveOptimizer(tmp, stage, trainStep, parallel);
            weights = PipelineCheckpoint.GatherWeights(stage, trainStep, comm.Rank);
        }
        trainStep.Experts?.Save(tmp);
        var remoteExperts = trainStep.Experts?.GatherRemote();          // collective: rank 0 writes every expert
        string? final = null;
        comm.Barrier();
        if (comm.Rank == 0)
        {
            if (model is FineTuning.LoraModel lora)
            {
                File.WriteAllText(Path.Combine(tmp, ModelCheckpoint.ConfigFile), model.Config.ToJson());
                FineTuning.PeftAdapter.Save(tmp, lora, Path.GetFullPath(_o.InitFrom!), tokenizer, weights);
            }
            else ModelCheckpoint.WriteModel(tmp, model, tokenizer, weights, remoteExperts);
            using var rng = torch.random.get_rng_state();
            ModelCheckpoint.WriteState(tmp, new TrainingState(step, tokenizer, train.State, Convert.ToBase64String(rng.bytes), trainStep.Optimizer.StepCount, tokens) { WorldSize = comm.WorldSize, Zero = _o.Zero, Layout = parallel.Grid.Dims.ToString() });
            fault?.MaybeFire("crash-in-checkpoint", 0, step, _o.OutDir, _log);
            final = store.Commit(step, tmp);
            store.Prune(_o.KeepCheckpoints);
        }
        comm.Barrier();
        return final;
    }

    /// <summary>The grid, the stage split, and the bubble fraction <c>plan</c> assumes; a warning when micro-batches are fewer than stages.</summary>
    void PrintPipeline(TextWriter log, RankGrid grid, CausalLM model, int microBatches)
    {
        log.WriteLine(PipelineStage.Describe(model, _o.Pp, _o.Interleave));
        double bubble = Planning.StepTimeModel.BubbleFraction(_o.Pp, microBatches, _o.Interleave);   // the formula plan uses
        string schedule = _o.Interleave > 1
            ? $"interleaved 1F1B (v = {_o.Interleave} chunks per rank) over {microBatches} micro-batches (the gradient accumulation); bubble (p−1)/(v·m+p−1) = {bubble:P1}"
            : $"1F1B over {microBatches} micro-batches (the gradient accumulation); bubble (p−1)/(m+p−1) = {bubble:P1}";
        log.WriteLine($"pipeline schedule: {schedule}; validation runs through the stages, samples are skipped (the model is split over ranks)");
        if (microBatches < _o.Pp)
            log.WriteLine($"warning: --pp {_o.Pp} with {microBatches} micro-batches: fewer micro-batches than stages leaves the pipeline idle {bubble:P0} of the step (the bubble); raise --total-batch-tokens to at least {_o.Pp} micro-batches");
    }

    string SampleText(CausalLM model, TextTokenizer tokenizer, Device device, long step)
    {
        var prompt = new[] { tokenizer.EotToken };
        var ids = Sampler.Generate(model, prompt, new SamplingOptions { MaxNewTokens = _o.SampleTokens, Temperature = 0.8, TopK = 200, Seed = _o.Seed + step }, device);
        return tokenizer.Decode(ids.AsSpan(prompt.Length));
    }
}
