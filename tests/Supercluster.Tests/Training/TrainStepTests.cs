using System.CommandLine;
using Supercluster.Checkpointing;
using Supercluster.Cli.Commands;
using Supercluster.Distributed;
using Supercluster.Model;
using Supercluster.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Supercluster.Tests.Training;

/// <summary>The training step's seams: bf16 compute weights kept by the optimizer, parameter groups, optimizer registry, derived CLI.</summary>
public class TrainStepTests : IClassFixture<TrainingFixture>
{
    readonly TrainingFixture _data;

    public TrainStepTests(TrainingFixture data)
    {
        TorchSetup.Init();
        _data = data;
    }

    static Action<long[], long[]> Batches(int seed)
    {
        var rng = new Random(seed);
        return (x, y) => { for (int i = 0; i < x.Length; i++) { x[i] = rng.Next(11); y[i] = (x[i] + 1) % 11; } };
    }

    [Fact]
    public void Under_bf16_the_model_computes_with_the_rounded_fp32_master_and_accumulates_fp32_gradients()
    {
        using var model = CausalLM.Create(TorchSetup.TinyGpt2(), seed: 3);
        var init = model.parameters().Select(p => p.detach().clone()).ToList();
        using var step = new TrainStep(model, new SingleProcess(), new TrainStepOptions { BatchSize = 2, SeqLen = 8, ComputeDtype = ScalarType.BFloat16 });
        Assert.All(model.parameters(), p => Assert.Equal(ScalarType.BFloat16, p.dtype));
        // The master is the fp32 initialisation itself, not its bf16 rounding.
        foreach (var ((_, master, _, _, _, _), start) in step.Flat.Items.Zip(init)) Assert.True(master.eq(start).all().item<bool>());

        var next = Batches(1);
        var losses = Enumerable.Range(0, 6).Select(_ => step.Run(next, accumulation: 2, lr: 1e-2).Loss).ToList();
        Assert.All(losses, l => Assert.True(double.IsFinite(l)));
        Assert.True(losses[^1] < losses[0], string.Join(", ", losses));
        Assert.Equal(ScalarType.Float32, step.Flat.Gradients.dtype);
        Assert.True(step.Flat.Gradients.abs().sum().item<float>() > 0);    // the bf16 gradients reached the fp32 buffer
        // After each update the compute weights are exactly the master rounded to bf16 (the shadow llm.c keeps).
        foreach (var ((name, master, _, _, _, _), p) in step.Flat.Items.Zip(model.parameters()))
        {
            Assert.True(p.eq(master.to(ScalarType.BFloat16)).all().item<bool>(), name);
        }
        Assert.Contains(step.Flat.Items.Zip(init), z => !z.First.Value.eq(z.Second).all().item<bool>());   // and the master moved
    }

    [Fact]
    public void Frozen_parameters_form_their_own_group_and_never_change()
    {
        using var model = CausalLM.Create(TorchSetup.TinyGpt2(), seed: 4);
        var frozen = model.named_parameters().Where(p => p.name.StartsWith("h.0.")).Select(p => p.parameter).ToList();
        foreach (var p in frozen) p.requires_grad = false;                 // e.g. base weights under an adapter
        var before = frozen.Select(p => p.detach().clone()).ToList();
        var trainable = model.named_parameters().First(p => p.name == "h.1.mlp.c_fc.weight").parameter;
        var trainableBefore = trainable.detach().clone();
        using var step = new TrainStep(model, new SingleProcess(), new TrainStepOptions { BatchSize = 2, SeqLen = 8, WeightDecay = 0.5 });
        Assert.Equal(frozen.Count, step.Optimizer.Groups.Assignments.Count(a => a.Group == ParameterGroup.Frozen));
        Assert.Contains($"frozen {frozen.Count} tensors", step.Optimizer.Groups.Describe());

        var next = Batches(2);
        for (int i = 0; i < 3; i++) step.Run(next, accumulation: 1, lr: 1e-2);
        foreach (var (p, b) in frozen.Zip(before)) Assert.True(p.eq(b).all().item<bool>());      // bitwise: no update, no decay
        Assert.False(trainable.eq(trainableBefore).all().item<bool>());
    }

    [Fact]
    public void The_optimizer_flag_names_a_registered_optimizer_or_AdamWs_implementation()
    {
        Assert.Equal(("adamw", "torch"), Optimizers.Parse("torch"));
        Assert.Equal(("adamw", "auto"), Optimizers.Parse("adamw"));
        Assert.Equal(("adamw", "fused"), Optimizers.Parse("AdamW:fused"));
        Assert.Equal(("lion", "auto"), Optimizers.Parse("lion"));
        var e = Assert.Throws<BadInputException>(() => Optimizers.Parse("sophia:torch"));
        Assert.Contains("unknown optimizer 'sophia'", e.Message);
        Assert.Contains("adamw", e.Message);
        Assert.Contains("unknown AdamW implementation 'apex'", Assert.Throws<BadInputException>(() => Optimizers.Parse("adamw:apex")).Message);
        Assert.Contains(Optimizers.Names, n => n == "adamw");
    }

    [Fact]
    public void Lion_takes_sign_steps_of_exactly_lr_and_trains_through_the_same_step()
    {
        // Chen et al. 2023, Alg. 2, by hand: step 1 has m = 0, so update = sign(g); decay first where the mask is 1.
        var param = tensor(new float[] { 1f, -2f, 0.5f, 0.1f });
        using var lion = new Lion(tensor(new float[] { 1, 1, 1, 0 }), beta1: 0.9, beta2: 0.99, weightDecay: 0.1);
        lion.Step(param, tensor(new float[] { 0.3f, -4f, 0f, 2f }), lr: 0.01);
        Assert.Equal([1f * 0.999f - 0.01f, -2f * 0.999f + 0.01f, 0.5f * 0.999f, 0.1f - 0.01f], param.data<float>().ToArray(), (x, y) => Math.Abs(x - y) < 1e-6);
        // m = 0.01·g; step 2 with g' = −g on element 0: sign(0.9·0.003 − 0.1·0.3) = sign(−0.0273) = −1 → p rises by lr.
        float before = param[0].item<float>();
        lion.Step(param, tensor(new float[] { -0.3f, 0f, 0f, 0f }), lr: 0.01);
        Assert.Equal(before * 0.999f + 0.01f, param[0].item<float>(), 5);
        Assert.Contains("no fused kernel", Assert.Throws<BadInputException>(() => Optimizers.Create("lion:fused", ones(2), 0.1)).Message);

        using var model = CausalLM.Create(TorchSetup.TinyGpt2(), seed: 6);
        using var step = new TrainStep(model, new SingleProcess(), new TrainStepOptions { BatchSize = 2, SeqLen = 8, Optimizer = "lion" });
        Assert.StartsWith("lion", step.Optimizer.Describe());
        var next = Batches(4);
        var losses = Enumerable.Range(0, 8).Select(_ => step.Run(next, 1, 3e-3).Loss).ToList();
        Assert.True(losses[^1] < losses[0], string.Join(", ", losses));
        Assert.Equal(["exp_avg"], step.Optimizer.Rule.State.Select(s => s.Name));
    }

    [Fact]
    public void Optimizer_state_is_saved_under_its_names_in_the_files_the_docs_name_and_read_back()
    {
        using var dir = new TempDir();
        Directory.CreateDirectory(dir["ckpt"]);
        using var model = CausalLM.Create(TorchSetup.TinyGpt2(), seed: 5);
        using var step = new TrainStep(model, new SingleProcess(), new TrainStepOptions { BatchSize = 2, SeqLen = 8 });
        var next = Batches(3);
        for (int i = 0; i < 2; i++) step.Run(next, 1, 1e-2);
        step.Optimizer.Save(dir["ckpt"]);
        string file = Path.Combine(dir["ckpt"], "optimizer-rank00000-of-00001.safetensors");   // README's name
        Assert.Equal(file, Path.Combine(dir["ckpt"], ModelCheckpoint.OptimizerFile(0, 1)));
        var (tensors, meta) = SafeTensors.Read(file);
        Assert.Equal(["exp_avg", "exp_avg_sq"], tensors.Keys.Order());
        Assert.Equal(("adamw", "2"), (meta["optimizer"], meta["steps"]));

        using var other = CausalLM.Create(TorchSetup.TinyGpt2(), seed: 5);
        using var fresh = new TrainStep(other, new SingleProcess(), new TrainStepOptions { BatchSize = 2, SeqLen = 8 });
        fresh.Optimizer.Load(dir["ckpt"]);
        Assert.Equal(2, fresh.Optimizer.StepCount);
        foreach (var ((name, a), (_, b)) in step.Optimizer.Rule.State.Zip(fresh.Optimizer.Rule.State))
            Assert.True(a.eq(b).all().item<bool>(), name);
    }

    [Fact]
    public void Train_flags_are_derived_from_TrainOptions_with_its_defaults()
    {
        var flags = TrainCommand.Flags();
        var flagged = FlagAttribute.Of<TrainOptions>();
        // Every property of the record is a flag (nothing declared in one place only).
        Assert.Equal(typeof(TrainOptions).GetProperties().Where(p => p.CanWrite).Select(p => p.Name).Order(), flagged.Select(f => f.Property.Name).Order());
        Assert.Equal(flagged.Select(f => f.Flag.Name), flags.Options.Select(o => o.Name));

        TrainOptions Parse(params string[] args)
        {
            var cmd = new Command("train");
            foreach (var o in flags.Options) cmd.Options.Add(o);
            var parse = cmd.Parse(args);
            Assert.Empty(parse.Errors);
            return TrainCommand.Read(flags, parse);
        }
        Assert.Equal(new TrainOptions { DataDir = "d" }, Parse("--data", "d"));
        Assert.Equal(new TrainOptions { DataDir = "d", BatchSize = 3, SampleTokens = 7, Resume = "auto", NLayer = 2, Lr = 0.5, Optimizer = "adamw:torch" },
            Parse("--data", "d", "--batch-size", "3", "--sample-tokens", "7", "--resume", "auto", "--n-layer", "2", "--lr", "0.5", "--optimizer", "adamw:torch"));
        Assert.Equal(["--data"], flags.Options.Where(o => o.Required).Select(o => o.Name));
    }

    [Fact]
    public void A_bf16_run_checkpoints_fp32_master_weights_and_resumes_exactly()
    {
        using var dir = new TempDir();
        TrainOptions O(string outDir, int steps) => new()
        {
            DataDir = _data.DataDir, OutDir = outDir, Model = "tiny", BatchSize = 2, SeqLen = 16, Steps = steps, Lr = 3e-3, Warmup = 1,
            Device = "cpu", Dtype = "bf16", CheckpointEvery = 2, Seed = 7, TotalBatchTokens = 64,
        };
        new Trainer(O(dir["straight"], 4), TextWriter.Null).Run();
        new Trainer(O(dir["resumed"], 2), TextWriter.Null).Run();
        new Trainer(O(dir["resumed"], 4) with { Resume = "auto" }, TextWriter.Null).Run();

        static List<double> Losses(string run) => MetricsLog.Read(Path.Combine(run, "metrics.jsonl")).Where(r => (string?)r["type"] == "train").Select(r => (double)r["loss"]!).ToList();
        Assert.Equal(Losses(dir["straight"]), Losses(dir["resumed"]));
        var a = SafeTensors.Read(Path.Combine(new CheckpointStore(dir["straight"]).Latest()!, ModelCheckpoint.ModelFile)).Tensors;
        var b = SafeTensors.Read(Path.Combine(new CheckpointStore(dir["resumed"]).Latest()!, ModelCheckpoint.ModelFile)).Tensors;
        foreach (var (k, t) in a)
        {
            Assert.Equal(ScalarType.Float32, t.dtype);                       // the master, not the bf16 compute copy
            Assert.True(t.eq(b[k]).all().item<bool>(), k);
        }
        // …and it is not merely bf16 values widened: some weight has bits below bf16's 8-bit mantissa.
        Assert.Contains(a.Values, t => !t.eq(t.to(ScalarType.BFloat16).to(ScalarType.Float32)).all().item<bool>());
    }
}
