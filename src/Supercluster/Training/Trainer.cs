using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using Supercluster.Checkpointing;
using Supercluster.Data;
using Supercluster.Inference;
using Supercluster.Model;
using Supercluster.Runtime;
using Supercluster.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

namespace Supercluster.Training;

public sealed record TrainResult(string RunDir, int Steps, double FinalLoss, double? FinalValLoss, double TokensPerSecond, string? LastCheckpoint);

/// <summary>
/// The training loop: AdamW, warmup + cosine schedule, gradient accumulation and clipping, periodic eval, samples
/// and checkpoints, exact resume. Parallelism and checkpoint formats live outside; this composes them.
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
        var device = DeviceSelect.Resolve(_o.Device);
        var dtype = DeviceSelect.Dtype(_o.Dtype);
        var meta = DatasetMeta.Load(_o.DataDir);
        var config = BuildConfig(meta);
        int seqLen = _o.SeqLen ?? config.SeqLen;
        if (seqLen > config.SeqLen)
            throw new BadInputException($"--seq-len {seqLen} exceeds the model context {config.SeqLen} of '{_o.Model}'");

        long tokensPerMicro = (long)_o.BatchSize * seqLen;
        long total = _o.TotalBatchTokens ?? tokensPerMicro;
        if (total % tokensPerMicro != 0)
            throw new BadInputException($"--total-batch-tokens {total} is not a multiple of batch-size × seq-len = {_o.BatchSize} × {seqLen} = {tokensPerMicro}");
        int accum = (int)(total / tokensPerMicro);

        Directory.CreateDirectory(_o.OutDir);
        var store = new CheckpointStore(_o.OutDir);
        string? resumeDir = FindResume(store);

        using var train = new TokenDataLoader(_o.DataDir, "train", _o.BatchSize, seqLen, seed: _o.Seed);
        using var val = meta.ValTokens > 0 ? new TokenDataLoader(_o.DataDir, "val", _o.BatchSize, seqLen, seed: _o.Seed) : null;
        var tokenizer = Tokenizers.Create(meta.Tokenizer);

        using var model = CausalLM.Create(config, _o.Seed);
        if (_o.InitFrom is not null && resumeDir is null) ModelCheckpoint.LoadWeights(model, _o.InitFrom);
        model.to(device);
        model.ComputeDtype = dtype;
        model.train();
        using var opt = new AdamW(model.named_parameters().Select(p => (p.name, p.parameter)), weightDecay: _o.WeightDecay);

        long startStep = 0, tokensSeen = 0;
        if (resumeDir is not null) (startStep, tokensSeen) = Restore(resumeDir, model, opt, train, config);
        File.WriteAllText(Path.Combine(_o.OutDir, "config.json"), JsonSerializer.Serialize(new { options = _o, model = config, dataset = meta, gradient_accumulation = accum, seq_len = seqLen }, ModelConfig.Json));

        var schedule = new LrSchedule(_o.Lr, _o.Warmup ?? Math.Min(100, _o.Steps / 10), _o.Steps, _o.MinLrRatio);
        var fault = FaultPlan.Parse(_o.Fault);
        double flopsPerToken = config.FlopsPerToken(seqLen);
        double? peak = DeviceSelect.PeakFlops(device, dtype);
        _log.WriteLine($"model {_o.Model}: {config.ParameterCount():N0} parameters, {config.NLayer} layers, d={config.NEmbd}, context {config.SeqLen}, vocab {config.VocabSize}; {device.type} {_o.Dtype}");
        _log.WriteLine($"batch: {_o.BatchSize} × {seqLen} tokens × {accum} accumulation = {total:N0} tokens/step; {_o.Steps} steps; lr {_o.Lr} (warmup {schedule.WarmupSteps}, cosine to {_o.Lr * _o.MinLrRatio:G3})");
        if (resumeDir is not null) _log.WriteLine($"resumed from {resumeDir} at step {startStep}");

        using var metrics = new MetricsLog(Path.Combine(_o.OutDir, "metrics.jsonl"), startStep);
        var progress = new ProgressLine();
        var x = new long[tokensPerMicro];
        var y = new long[tokensPerMicro];
        var clock = Stopwatch.StartNew();
        long tokensThisRun = 0;
        double lastLoss = double.NaN, tokPerSec = 0;
        double? lastVal = null;
        string? lastCheckpoint = null;

        for (long step = startStep; step < _o.Steps; step++)
        {
            var stepClock = Stopwatch.StartNew();
            double lr = schedule.At((int)step);
            float loss, norm;
            using (var scope = NewDisposeScope())
            {
                opt.ZeroGrad();
                var lossSum = zeros(1, device: device);
                for (int micro = 0; micro < accum; micro++)
                {
                    train.NextBatch(x, y);
                    var l = Evaluator.BatchLoss(model, x, y, _o.BatchSize, seqLen, device) / accum;
                    l.backward();
                    lossSum.add_(l.detach());
                }
                norm = (float)(_o.GradClip > 0
                    ? nn.utils.clip_grad_norm_(model.parameters(), _o.GradClip)
                    : GradNorm(model));
                opt.Step(lr);
                loss = lossSum.item<float>(); // the one host sync per step, for the log
            }
            long done = step + 1;
            tokensSeen += total;
            tokensThisRun += total;
            double dt = stepClock.Elapsed.TotalSeconds;
            tokPerSec = tokensThisRun / clock.Elapsed.TotalSeconds;
            double? mfu = peak is { } p ? flopsPerToken * total / dt / p : null;
            lastLoss = loss;
            metrics.Write(new JsonObject
            {
                ["type"] = "train", ["step"] = done, ["loss"] = loss, ["lr"] = lr, ["grad_norm"] = norm, ["tokens"] = tokensSeen,
                ["tokens_per_s"] = Math.Round(total / dt, 1), ["step_ms"] = Math.Round(dt * 1000, 2), ["mfu"] = mfu, ["time_s"] = Math.Round(clock.Elapsed.TotalSeconds, 3),
            });
            var eta = TimeSpan.FromSeconds((_o.Steps - done) * clock.Elapsed.TotalSeconds / (done - startStep));
            progress.Update($"step {done}/{_o.Steps} | loss {loss:F4} | lr {lr:0.00e+0} | norm {norm:F2} | {tokPerSec:N0} tok/s{(mfu is { } m ? $" | MFU {m:P1}" : "")} | ETA {ProgressLine.Format(eta)}",
                force: done == _o.Steps);

            bool last = done == _o.Steps;
            if (val is not null && ((_o.EvalEvery > 0 && done % _o.EvalEvery == 0) || last))
            {
                lastVal = Evaluator.Loss(model, val, _o.BatchSize, seqLen, _o.EvalTokens, device);
                metrics.Write(new JsonObject { ["type"] = "eval", ["step"] = done, ["val_loss"] = lastVal, ["time_s"] = Math.Round(clock.Elapsed.TotalSeconds, 3) });
                progress.Done();
                _log.WriteLine($"step {done}: val loss {lastVal:F4}");
            }
            if (_o.SampleEvery > 0 && (done % _o.SampleEvery == 0 || last))
            {
                string text = SampleText(model, tokenizer, device, done);
                metrics.Write(new JsonObject { ["type"] = "sample", ["step"] = done, ["text"] = text });
                progress.Done();
                _log.WriteLine($"step {done} sample: {text.ReplaceLineEndings(" ")}");
            }
            if ((_o.CheckpointEvery > 0 && done % _o.CheckpointEvery == 0) || last)
            {
                lastCheckpoint = SaveCheckpoint(store, done, tokensSeen, model, opt, train, tokenizer.Name, fault);
                store.Prune(_o.KeepCheckpoints);
            }
            // Step-end faults fire after this step's checkpoint, so a restart resumes from it.
            fault?.MaybeFire("kill", 0, done, _o.OutDir, _log);
            fault?.MaybeFire("hang", 0, done, _o.OutDir, _log);
        }
        progress.Done();
        return new TrainResult(_o.OutDir, _o.Steps, lastLoss, lastVal, tokPerSec, lastCheckpoint ?? store.Latest());
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
        };
        return c.Validate($"--model {_o.Model}");
    }

    string? FindResume(CheckpointStore store)
    {
        if (_o.Resume is null)
        {
            if (store.Latest() is { } existing)
                throw new BadInputException($"--out {_o.OutDir}: already has checkpoints ({existing}); pass --resume auto to continue it or choose another --out");
            return null;
        }
        if (_o.Resume == "auto") return store.Latest(w => _log.WriteLine(w));
        return CheckpointStore.Resolve(_o.Resume, w => _log.WriteLine(w));
    }

    (long Step, long Tokens) Restore(string dir, CausalLM model, AdamW opt, TokenDataLoader train, ModelConfig config)
    {
        var saved = ModelCheckpoint.ReadConfig(dir);
        if (saved != config)
            throw new BadInputException($"{Path.Combine(dir, ModelCheckpoint.ConfigFile)}: checkpoint model config ({Describe(saved)}) does not match the requested model ({Describe(config)})");
        var state = ModelCheckpoint.ReadState(dir);
        ModelCheckpoint.LoadWeights(model, Path.Combine(dir, ModelCheckpoint.ModelFile));
        var (optState, _) = SafeTensors.Read(Path.Combine(dir, ModelCheckpoint.OptimizerFile));
        try { opt.LoadState(optState.ToDictionary(kv => kv.Key, kv => kv.Value.to(model.parameters().First().device)), state.OptimizerSteps, dir); }
        finally { foreach (var t in optState.Values) t.Dispose(); }
        train.Restore(state.Data);
        using var rng = tensor(Convert.FromBase64String(state.RngState), dtype: ScalarType.Byte);
        torch.random.set_rng_state(rng);
        return (state.Step, state.TokensSeen);
    }

    static string Describe(ModelConfig c) => $"{c.Family.ToString().ToLowerInvariant()} n_layer={c.NLayer} n_head={c.NHead} n_embd={c.NEmbd} vocab={c.VocabSize} context={c.SeqLen}";

    string SaveCheckpoint(CheckpointStore store, long step, long tokens, CausalLM model, AdamW opt, TokenDataLoader train, string tokenizer, FaultPlan? fault) =>
        store.Save(step, dir =>
        {
            ModelCheckpoint.WriteModel(dir, model, tokenizer);
            SafeTensors.Write(Path.Combine(dir, ModelCheckpoint.OptimizerFile), opt.State());
            using var rng = torch.random.get_rng_state();
            ModelCheckpoint.WriteState(dir, new TrainingState(step, tokenizer, train.State, Convert.ToBase64String(rng.bytes), opt.StepCount, tokens));
        }, beforeManifest: () => fault?.MaybeFire("crash-in-checkpoint", 0, step, _o.OutDir, _log));

    static double GradNorm(CausalLM model)
    {
        using var _ = NewDisposeScope();
        var sq = model.parameters().Where(p => p.grad is not null).Select(p => p.grad!.pow(2).sum()).ToList();
        return sq.Count == 0 ? 0 : stack(sq).sum().sqrt().item<float>();
    }

    string SampleText(CausalLM model, TextTokenizer tokenizer, Device device, long step)
    {
        var prompt = new[] { tokenizer.EotToken };
        var ids = Sampler.Generate(model, prompt, new SamplingOptions { MaxNewTokens = _o.SampleTokens, Temperature = 0.8, TopK = 200, Seed = _o.Seed + step }, device);
        return tokenizer.Decode(ids.AsSpan(prompt.Length));
    }
}
