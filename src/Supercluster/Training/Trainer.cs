using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using Supercluster.Checkpointing;
using Supercluster.Data;
using Supercluster.Distributed;
using Supercluster.Inference;
using Supercluster.Model;
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

        var meta = DatasetMeta.Load(_o.DataDir);
        var config = BuildConfig(meta) with { PadVocabMultiple = _o.PadVocab ?? DefaultPadVocab(device) };
        int seqLen = _o.SeqLen ?? config.SeqLen;
        if (seqLen > config.SeqLen)
            throw new BadInputException($"--seq-len {seqLen} exceeds the model context {config.SeqLen} of '{_o.Model}'");

        long tokensPerMicro = (long)_o.BatchSize * seqLen;
        long perStepAllRanks = tokensPerMicro * comm.WorldSize;
        long total = _o.TotalBatchTokens ?? perStepAllRanks;
        if (total % perStepAllRanks != 0)
            throw new BadInputException($"--total-batch-tokens {total} is not a multiple of batch-size × seq-len × world size = {_o.BatchSize} × {seqLen} × {comm.WorldSize} = {perStepAllRanks}");
        int accum = (int)(total / perStepAllRanks);

        Directory.CreateDirectory(_o.OutDir);
        using var runLock = lead ? RunLock.Acquire(_o.OutDir, log.WriteLine) : null;   // one job per run directory (exit 2 naming the holder)
        var store = new CheckpointStore(_o.OutDir);
        string? resumeDir = FindResume(store, log);

        using var train = new TokenDataLoader(_o.DataDir, "train", _o.BatchSize, seqLen, comm.Rank, comm.WorldSize, _o.Seed);
        // Under expert parallelism a forward is collective (all-to-all), so every rank evaluates and samples with rank 0.
        bool inferHere = lead || _o.Ep > 1;
        using var val = meta.ValTokens > 0 && inferHere ? Evaluator.OpenRows(_o.DataDir, "val", seqLen) : null;
        var tokenizer = Tokenizers.Create(meta.Tokenizer);

        // MoE: the expert-parallel grid (EP inside DP); each rank builds only its experts (Parallelism/ExpertParallel.cs).
        if (_o.Ep > 1 && !config.IsMoE) throw new BadInputException($"--ep {_o.Ep}: model '{_o.Model}' has no experts; expected --experts E (E > 1) or an MoE preset");
        if (config.IsMoE && config.Experts % _o.Ep != 0) throw new BadInputException($"--ep {_o.Ep} does not divide --experts {config.Experts}: expected a divisor of the expert count");
        if (_o.Ep > 1 && comm.WorldSize == 1) throw new BadInputException($"--ep {_o.Ep} needs {_o.Ep} or more ranks: this job has one (launch with mpirun -np N, N a multiple of {_o.Ep})");
        using var grid = config.IsMoE ? new Parallelism.RankGrid(comm, Parallelism.ParallelDims.For(comm.WorldSize, ep: _o.Ep)) : null;
        using var model = CausalLM.Create(config, _o.Seed, grid is null ? null : new ExpertShard(grid.EpRank, _o.Ep));
        if (grid is not null) Parallelism.ExpertParallel.Apply(model, grid.Ep, _o.CapacityFactor);
        // Weights are loaded into the fp32 model before the step makes them its master copy (and bf16 compute weights).
        if (_o.InitFrom is not null && config.IsMoE)
            throw new BadInputException($"--init-from {_o.InitFrom}: Hugging Face GPT-2 weights have no experts; expected a dense model (drop --experts {config.Experts})");
        if (_o.InitFrom is not null && resumeDir is null) ModelCheckpoint.LoadWeights(model, _o.InitFrom);
        if (resumeDir is not null) LoadResumeWeights(resumeDir, model, config);
        model.to(device);
        model.train();
        using var trainStep = new TrainStep(model, comm, new TrainStepOptions
        {
            BatchSize = _o.BatchSize, SeqLen = seqLen, Zero = _o.Zero, WeightDecay = _o.WeightDecay, GradClip = _o.GradClip,
            Optimizer = _o.Optimizer, ComputeDtype = dtype, AuxLossCoef = _o.AuxLossCoef, ZLossCoef = _o.ZLossCoef,
        }, grid is null ? null : (grid.Ep, grid.ExpertDp));

        long startStep = 0, tokensSeen = 0;
        if (resumeDir is not null) (startStep, tokensSeen) = Restore(resumeDir, trainStep.Optimizer, train);
        if (resumeDir is not null) trainStep.Experts?.Load(resumeDir);
        if (lead)
            DurableFile.WriteAllText(Path.Combine(_o.OutDir, "config.json"), JsonSerializer.Serialize(new
            {
                options = _o, model = config, dataset = meta, gradient_accumulation = accum, seq_len = seqLen, world_size = comm.WorldSize, backend = comm.Backend,
            }, ModelConfig.Json));

        var schedule = new LrSchedule(_o.Lr, _o.Warmup ?? Math.Min(100, _o.Steps / 10), _o.Steps, _o.MinLrRatio);
        var fault = FaultPlan.Parse(_o.Fault);
        double flopsPerToken = Planning.FlopsModel.ModelFlopsPerToken(config, seqLen);
        double? peak = DeviceSelect.PeakFlops(device, dtype);
        var mem = trainStep.MemoryPerRank();
        log.WriteLine($"model {_o.Model}: {config.ParameterCount():N0} parameters, {config.NLayer} layers, d={config.NEmbd}, context {config.SeqLen}, vocab {config.VocabSize}{(config.PaddedVocab != config.VocabSize ? $" (tables padded to {config.PaddedVocab})" : "")}; {device.type} {_o.Dtype}");
        log.WriteLine(Parallelism.ExpertParallel.Describe(config, seqLen, _o.Ep, _o.CapacityFactor));
        log.WriteLine($"ranks: {comm.WorldSize} ({comm.Backend}{(comm.WorldSize > 1 ? $", launched by {env.Launcher}" : "")}){(_o.Zero == 1 ? ", ZeRO-1" : "")}; per rank: parameters {Mb(mem.Parameters)}, gradients {Mb(mem.Gradients)}, optimizer state {Mb(mem.Optimizer)}");
        log.WriteLine($"global batch = {_o.BatchSize} sequences × {seqLen} tokens × {accum} accumulation × {comm.WorldSize} ranks = {total:N0} tokens/step; {_o.Steps} steps; lr {_o.Lr} (warmup {schedule.WarmupSteps}, cosine to {_o.Lr * _o.MinLrRatio:G3})");
        log.WriteLine($"optimizer: {trainStep.Optimizer.Describe()}; {trainStep.Optimizer.Groups.Describe()}");
        if (resumeDir is not null) log.WriteLine($"resumed from {resumeDir} at step {startStep}");

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

        for (long step = startStep; step < _o.Steps; step++)
        {
            var stepClock = Stopwatch.StartNew();
            double lr = schedule.At((int)step);
            var stepResult = trainStep.Run(train.NextBatch, accum, lr);
            var (loss, norm, commSeconds) = stepResult;
            long done = step + 1;
            tokensSeen += total;
            tokensThisRun += total;
            double dt = stepClock.Elapsed.TotalSeconds;
            var (rankStepMs, rankCommMs) = PerRankTimes(comm, dt, commSeconds);
            heartbeat?.Beat(done);
            tokPerSec = tokensThisRun / clock.Elapsed.TotalSeconds;
            double? mfu = peak is { } p ? flopsPerToken * total / comm.WorldSize / dt / p : null;
            lastLoss = loss;
            metrics?.Write(new JsonObject
            {
                ["type"] = "train", ["step"] = done, ["loss"] = loss, ["lr"] = lr, ["grad_norm"] = norm, ["tokens"] = tokensSeen,
                ["tokens_per_s"] = Math.Round(total / dt, 1), ["step_ms"] = Math.Round(dt * 1000, 2), ["mfu"] = mfu, ["time_s"] = Math.Round(clock.Elapsed.TotalSeconds, 3),
                ["rank_step_ms"] = rankStepMs, ["rank_comm_ms"] = rankCommMs,
                ["moe"] = Parallelism.ExpertParallel.MetricsJson(stepResult),
            });
            var eta = TimeSpan.FromSeconds((_o.Steps - done) * clock.Elapsed.TotalSeconds / (done - startStep));
            progress.Update($"step {done}/{_o.Steps} | loss {loss:F4} | lr {lr:0.00e+0} | norm {norm:F2} | {tokPerSec:N0} tok/s{(mfu is { } m ? $" | MFU {m:P1}" : "")}{(comm.WorldSize > 1 ? $" | comm {commSeconds * 1000:F0} ms" : "")}{Parallelism.ExpertParallel.ShortForm(stepResult)} | ETA {ProgressLine.Format(eta)}",
                force: done == _o.Steps);

            bool last = done == _o.Steps;
            if (val is not null && ((_o.EvalEvery > 0 && done % _o.EvalEvery == 0) || last))
            {
                var eval = Evaluator.Evaluate(model, val, _o.BatchSize, seqLen, _o.EvalTokens, device); lastVal = eval.Loss;
                metrics?.Write(new JsonObject { ["type"] = "eval", ["step"] = done, ["val_loss"] = lastVal, ["time_s"] = Math.Round(clock.Elapsed.TotalSeconds, 3) });
                progress.Done();
                log.WriteLine($"step {done}: val loss {lastVal:F4} over {eval.Tokens:N0} tokens");
            }
            if (inferHere && _o.SampleEvery > 0 && (done % _o.SampleEvery == 0 || last))
            {
                string text = SampleText(model, tokenizer, device, done);
                metrics?.Write(new JsonObject { ["type"] = "sample", ["step"] = done, ["text"] = text });
                progress.Done();
                log.WriteLine($"step {done} sample: {text.ReplaceLineEndings(" ")}");
            }
            fault?.MaybeFire("sigterm", comm.Rank, done, _o.OutDir, _log);
            bool stopping = stop.ShouldStop(comm, device);
            if ((_o.CheckpointEvery > 0 && done % _o.CheckpointEvery == 0) || last || stopping)
                lastCheckpoint = store.Guard(done, () => SaveCheckpoint(store, comm, done, tokensSeen, model, trainStep, train, tokenizer.Name, fault));
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

    /// <summary>
    /// Every rank's step time and time in the step's collectives (ms), gathered so a straggler shows up in rank 0's
    /// metrics. Collective time is the communicator's own measure (CUDA events on NCCL, not the host's enqueue time),
    /// taken by <see cref="TrainStep.Run"/>; the gather runs on the communicator's device.
    /// </summary>
    static (JsonArray? Step, JsonArray? Comm) PerRankTimes(ICommunicator comm, double stepSeconds, double commSeconds)
    {
        if (comm.WorldSize == 1) return (null, null);
        using var mine = tensor(new[] { stepSeconds * 1000, commSeconds * 1000 }, device: comm.Device);
        using var all = zeros(2 * comm.WorldSize, dtype: ScalarType.Float64, device: comm.Device);
        comm.AllGather(mine, all);
        comm.TakeCommunicationSeconds();                     // this gather is bookkeeping, not the next step's communication
        using var host = all.cpu();
        var v = host.data<double>().ToArray();
        return (new JsonArray(Enumerable.Range(0, comm.WorldSize).Select(r => (JsonNode?)Math.Round(v[2 * r], 2)).ToArray()),
                new JsonArray(Enumerable.Range(0, comm.WorldSize).Select(r => (JsonNode?)Math.Round(v[2 * r + 1], 2)).ToArray()));
    }

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
        if (saved != config)
            throw new BadInputException($"{Path.Combine(dir, ModelCheckpoint.ConfigFile)}: checkpoint model config ({Describe(saved)}) does not match the requested model ({Describe(config)})");
        ModelCheckpoint.ReadState(dir);   // refuse a model-only checkpoint before anything is built
        ModelCheckpoint.LoadWeights(model, Path.Combine(dir, ModelCheckpoint.ModelFile));
    }

    /// <summary>Optimizer state, data position and RNG of a checkpoint (its weights are loaded by <see cref="LoadResumeWeights"/>).</summary>
    static (long Step, long Tokens) Restore(string dir, TrainingOptimizer optimizer, TokenDataLoader train)
    {
        var state = ModelCheckpoint.ReadState(dir);
        optimizer.Load(dir);
        if (optimizer.StepCount != state.OptimizerSteps)
            throw new BadInputException($"{dir}: optimizer state is at step {optimizer.StepCount}, state.json says {state.OptimizerSteps}");
        train.Restore(state.Data);
        using var rng = tensor(Convert.FromBase64String(state.RngState), dtype: ScalarType.Byte);
        torch.random.set_rng_state(rng);
        return (state.Step, state.TokensSeen);
    }

    static string Describe(ModelConfig c) => $"{c.Family.ToString().ToLowerInvariant()} n_layer={c.NLayer} n_head={c.NHead} n_embd={c.NEmbd} vocab={c.VocabSize} pad_vocab={c.PadVocabMultiple} context={c.SeqLen}{(c.IsMoE ? $" experts={c.Experts} active={c.ActiveExperts} moe_every={c.MoeEvery}" : "")}";

    /// <summary>Rank 0 opens the temporary directory, every rank writes its optimizer shard, rank 0 writes the rest and commits.</summary>
    string? SaveCheckpoint(CheckpointStore store, ICommunicator comm, long step, long tokens, CausalLM model, TrainStep trainStep, TokenDataLoader train, string tokenizer, FaultPlan? fault)
    {
        string tmp = Path.Combine(store.Root, $".tmp-{CheckpointStore.DirName(step)}");
        if (comm.Rank == 0) tmp = store.BeginWrite(step);
        comm.Barrier();
        trainStep.Optimizer.Save(tmp);
        trainStep.Experts?.Save(tmp);
        var remoteExperts = trainStep.Experts?.GatherRemote();          // collective: rank 0 writes every expert
        string? final = null;
        comm.Barrier();
        if (comm.Rank == 0)
        {
            ModelCheckpoint.WriteModel(tmp, model, tokenizer, trainStep.MasterWeights, remoteExperts);
            using var rng = torch.random.get_rng_state();
            ModelCheckpoint.WriteState(tmp, new TrainingState(step, tokenizer, train.State, Convert.ToBase64String(rng.bytes), trainStep.Optimizer.StepCount, tokens) { WorldSize = comm.WorldSize, Zero = _o.Zero });
            fault?.MaybeFire("crash-in-checkpoint", 0, step, _o.OutDir, _log);
            final = store.Commit(step, tmp);
            store.Prune(_o.KeepCheckpoints);
        }
        comm.Barrier();
        return final;
    }

    string SampleText(CausalLM model, TextTokenizer tokenizer, Device device, long step)
    {
        var prompt = new[] { tokenizer.EotToken };
        var ids = Sampler.Generate(model, prompt, new SamplingOptions { MaxNewTokens = _o.SampleTokens, Temperature = 0.8, TopK = 200, Seed = _o.Seed + step }, device);
        return tokenizer.Decode(ids.AsSpan(prompt.Length));
    }
}
