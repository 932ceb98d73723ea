using System.Text.Json;
using Supercluster.Checkpointing;
using Supercluster.Distributed;
using Supercluster.Inference;
using Supercluster.Model;
using Supercluster.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Supercluster.Tests.Model;

/// <summary>
/// Supercluster's models and AdamW against plain PyTorch (llm.c's test_gpt2.c habit). The fixtures in
/// tests/fixtures/numerics are written by make_reference.py beside them (PyTorch 1.13, float64 arithmetic, stored
/// as float32): fixed weights under Hugging Face names, two batches, and PyTorch's logits, loss, every parameter's
/// gradient and the weights after two clipped AdamW steps. CI needs no PyTorch: only the committed files are read.
///
/// Tolerances are relative to each tensor's largest magnitude (max|ours − ref| ≤ tol · max|ref|, so entries near
/// zero do not dominate): fp32 against an fp64 reference leaves ~1e-7 per op, a few 1e-6 after a dozen layers of
/// sums, so 1e-5 for logits and loss; gradients take one more chain of sums through every layer: 1e-4. AdamW is
/// checked on PyTorch's own gradients (Adam turns rounding noise in near-zero gradients into ±lr moves, see
/// make_reference.py): 1e-5 of the weights' scale (~0.1) is 1e-6, ~1000× below one step's change (lr = 1e-3).
/// </summary>
public class PyTorchReferenceTests
{
    const double LogitsTol = 1e-5, GradTol = 1e-4, WeightTol = 1e-5;

    public PyTorchReferenceTests() => TorchSetup.Init();

    /// <summary>One fixture: the config, the reference tensors, and the training hyper-parameters it was made with.</summary>
    sealed class Reference : IDisposable
    {
        public readonly string Path;
        public readonly Dictionary<string, Tensor> T;
        public readonly Dictionary<string, string> Meta;
        public readonly ModelConfig Config;

        public Reference(string family)
        {
            Path = FixturePath($"{family}.safetensors");
            (T, Meta) = SafeTensors.Read(Path);
            Assert.Equal("supercluster-numerics", Meta["format"]);
            Assert.Equal("1", Meta["version"]);
            Config = ModelConfig.FromJson(Meta["config"], Path);
        }

        public double[] Lr => JsonSerializer.Deserialize<double[]>(Meta["lr"])!;
        public double Double(string key) => double.Parse(Meta[key], System.Globalization.CultureInfo.InvariantCulture);

        public void Dispose() { foreach (var t in T.Values) t.Dispose(); }
    }

    static string FixturePath(string file)
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            string p = System.IO.Path.Combine(dir.FullName, "tests", "fixtures", "numerics", file);
            if (File.Exists(p)) return p;
        }
        throw new FileNotFoundException($"tests/fixtures/numerics/{file} not found above {AppContext.BaseDirectory}");
    }

    /// <summary>Our model with the fixture's weights (through the Hugging Face checkpoint loader), fp32, on the CPU.</summary>
    static CausalLM Load(Reference r, int padMultiple)
    {
        var model = CausalLM.Create(r.Config with { PadVocabMultiple = padMultiple }, seed: 0);
        ModelCheckpoint.LoadWeights(model, r.Path);
        return model;
    }

    /// <summary>The fixture tensor <paramref name="prefix"/>+HF name in our layout (Conv1D weights transposed).</summary>
    static Tensor Expected(Reference r, CausalLM model, string prefix, string name)
    {
        var (hf, transposed) = model.HfNames[name];
        var t = r.T[prefix + hf];
        return transposed ? t.t() : t;
    }

    /// <summary>max|actual − expected| / max|expected|, over the real vocabulary rows; padding rows must be exactly 0.</summary>
    static double RelError(CausalLM model, string name, Tensor actual, Tensor expected)
    {
        if (model.VocabTables.Contains(name) && actual.shape[0] > model.Config.VocabSize)
        {
            var pad = actual.narrow(0, model.Config.VocabSize, actual.shape[0] - model.Config.VocabSize);
            Assert.True(pad.abs().max().item<float>() == 0, $"{name}: vocabulary padding rows are not zero");
            actual = actual.narrow(0, 0, model.Config.VocabSize);
        }
        Assert.Equal(expected.shape, actual.shape);
        return (actual.to(ScalarType.Float64) - expected.to(ScalarType.Float64)).abs().max().item<double>()
             / expected.abs().max().to(ScalarType.Float64).item<double>();
    }

    static Tensor Batch(Reference r, string key, int step) => r.T[key][step];   // [B, T]

    static Tensor Loss(CausalLM model, Tensor x, Tensor y)
    {
        var logits = model.forward(x);                                                              // [B, T, vocab]
        return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[2]), y.reshape(-1));
    }

    public static TheoryData<string, int> Cases => new()
    {
        { "gpt2", 1 }, { "gpt2", 16 },     // 67 real tokens; padded to 80
        { "llama", 1 }, { "llama", 16 },
    };

    [Theory, MemberData(nameof(Cases))]
    public void Logits_loss_and_every_gradient_match_pytorch(string family, int padMultiple)
    {
        using var r = new Reference(family);
        using var model = Load(r, padMultiple);
        using var scope = NewDisposeScope();
        var x = Batch(r, "input.x", 0);
        var y = Batch(r, "input.y", 0);

        var logits = model.forward(x);
        Assert.Equal([x.shape[0], x.shape[1], (long)r.Config.VocabSize], logits.shape);
        double logitsErr = (logits.to(ScalarType.Float64) - r.T["ref.logits"].to(ScalarType.Float64)).abs().max().item<double>()
                         / r.T["ref.logits"].abs().max().item<float>();
        Assert.True(logitsErr <= LogitsTol, $"{family} pad {padMultiple}: logits rel. error {logitsErr:E2} > {LogitsTol:E0}");

        var loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[2]), y.reshape(-1));
        double lossErr = Math.Abs(loss.item<float>() - r.T["ref.loss"].item<float>()) / r.T["ref.loss"].item<float>();
        Assert.True(lossErr <= LogitsTol, $"{family}: loss {loss.item<float>()} vs PyTorch {r.T["ref.loss"].item<float>()}");

        loss.backward();
        int compared = 0;
        foreach (var (name, p) in model.named_parameters())
        {
            double err = RelError(model, name, p.grad!, Expected(r, model, "grad.", name));
            Assert.True(err <= GradTol, $"{family} pad {padMultiple}: gradient of {name} rel. error {err:E2} > {GradTol:E0}");
            compared++;
        }
        Assert.Equal(r.T.Keys.Count(k => k.StartsWith("grad.")), compared);   // every parameter PyTorch has, no more
    }

    /// <summary>The optimizer as TrainStep drives it: flat buffers, gradient reduction and global-norm clipping, AdamW (torch ops) with decay on matrices only.</summary>
    sealed class OptimizerUnderTest : IDisposable
    {
        readonly FlatParameters _flat;
        readonly DataParallel _dp;
        readonly TrainingOptimizer _opt;

        public OptimizerUnderTest(Reference r, CausalLM model)
        {
            var comm = new SingleProcess();
            _flat = new FlatParameters(model.named_parameters().Select(p => (p.name, p.parameter)), comm.WorldSize);
            _dp = new DataParallel(_flat, comm, zeroStage: 0);
            _opt = new TrainingOptimizer(_flat, _dp.ShardRange, comm.Rank, comm.WorldSize, sharded: false, spec: "torch", weightDecay: r.Double("weight_decay"));
        }

        public void ZeroGrad() => _flat.ZeroGradients();

        /// <summary>Reduces, clips and updates; returns the global gradient norm before clipping.</summary>
        public Tensor Step(double lr, double clip)
        {
            var (grad, norm) = _dp.ReduceGradients();
            _opt.Step(grad, lr, TrainStep.ClipScale(norm, clip));
            _dp.GatherParameters();
            return norm;
        }

        public void Dispose() { _opt.Dispose(); _flat.Dispose(); }
    }

    static OptimizerUnderTest Optimizer(Reference r, CausalLM model) => new(r, model);

    [Theory, MemberData(nameof(Cases))]
    public void Two_adamw_steps_on_pytorchs_gradients_give_pytorchs_weights(string family, int padMultiple)
    {
        using var r = new Reference(family);
        using var model = Load(r, padMultiple);
        using var dp = Optimizer(r, model);
        Assert.Equal(1e-8, r.Double("eps"));                    // AdamW's default ε, which our AdamW uses
        string[] gradients = ["grad.", "grad_step2."];
        for (int step = 0; step < 2; step++)
        {
            using var scope = NewDisposeScope();
            dp.ZeroGrad();
            using (no_grad())
                foreach (var (name, p) in model.named_parameters())      // PyTorch's gradient of this step, into our flat buffer
                {
                    var g = Expected(r, model, gradients[step], name);
                    p.grad!.narrow(0, 0, g.shape[0]).copy_(g);
                }
            double norm = dp.Step(r.Lr[step], r.Double("grad_clip")).item<double>();
            float refNorm = r.T["ref.grad_norm"][step].item<float>();
            Assert.True(Math.Abs(norm - refNorm) <= 1e-6 * refNorm, $"step {step + 1}: grad norm {norm} vs PyTorch {refNorm}");
            Assert.True(refNorm > r.Double("grad_clip"), "clipping must be active for the test to cover it");
        }
        using var _ = no_grad();
        foreach (var (name, p) in model.named_parameters())
        {
            double err = RelError(model, name, p, Expected(r, model, "adamw2.", name));
            Assert.True(err <= WeightTol, $"{family} pad {padMultiple}: {name} after two AdamW steps, rel. error {err:E2} > {WeightTol:E0}");
            // And the steps moved it: a no-op optimizer fails here rather than passing.
            Assert.True(RelError(model, name, p, Expected(r, model, "", name)) > 100 * WeightTol, $"{name} did not change");
        }
    }

    [Theory, MemberData(nameof(Cases))]
    public void Two_training_steps_end_to_end_match_pytorch(string family, int padMultiple)
    {
        using var r = new Reference(family);
        using var model = Load(r, padMultiple);
        using var dp = Optimizer(r, model);
        for (int step = 0; step < 2; step++)
        {
            using var scope = NewDisposeScope();
            dp.ZeroGrad();
            Loss(model, Batch(r, "input.x", step), Batch(r, "input.y", step)).backward();
            double norm = dp.Step(r.Lr[step], r.Double("grad_clip")).item<double>();
            float refNorm = r.T["ref.grad_norm"][step].item<float>();
            Assert.True(Math.Abs(norm - refNorm) <= GradTol * refNorm, $"step {step + 1}: grad norm {norm} vs PyTorch {refNorm}");
        }
        // Weights element by element are pinned above; here the loss they give (see make_reference.py on why not each entry).
        using var _ = no_grad();
        float loss = Loss(model, Batch(r, "input.x", 0), Batch(r, "input.y", 0)).item<float>(), expected = r.T["ref.loss_after"].item<float>();
        Assert.True(Math.Abs(loss - expected) <= LogitsTol * expected, $"{family} pad {padMultiple}: loss after two steps {loss} vs PyTorch {expected}");
        Assert.True(Math.Abs(expected - r.T["ref.loss"].item<float>()) > 100 * LogitsTol * expected, "the steps must change the loss");
    }

    [Theory]
    [InlineData("gpt2")]
    [InlineData("llama")]
    public void Kv_cache_decoding_reproduces_pytorch_logits(string family)
    {
        using var r = new Reference(family);
        using var model = Load(r, 1);
        model.eval();
        using var _ = no_grad();
        var x = Batch(r, "input.x", 0);                                                   // [B, T]
        using var cache = new KvCache(model.Config, x.shape[0], CPU, ScalarType.Float32);
        var parts = new List<Tensor> { model.Forward(x.narrow(1, 0, 5), cache) };          // prefill 5, then one token at a time
        for (long t = 5; t < x.shape[1]; t++) parts.Add(model.Forward(x.narrow(1, t, 1), cache));
        var logits = cat(parts, dim: 1);
        double err = (logits.to(ScalarType.Float64) - r.T["ref.logits"].to(ScalarType.Float64)).abs().max().item<double>()
                   / r.T["ref.logits"].abs().max().item<float>();
        Assert.True(err <= LogitsTol, $"{family}: cached decoding logits rel. error {err:E2} > {LogitsTol:E0}");
    }

    [Theory]
    [InlineData("gpt2")]
    [InlineData("llama")]
    public void Batched_decoding_of_rows_at_different_lengths_reproduces_pytorch_logits(string family)
    {
        using var r = new Reference(family);
        using var model = Load(r, 1);
        model.eval();
        using var _ = no_grad();
        var x = Batch(r, "input.x", 0);                                                   // [B, T]
        long seq = x.shape[1];
        using var cache = new BatchKvCache(model.Config, slots: 3, CPU, ScalarType.Float32);
        cache.Rent();                                                                     // an idle slot between the rows
        int[] slots = [cache.Rent(), cache.Rent()];
        long[] prefill = [5, 9];
        var rows = new List<Tensor>[] { [], [] };
        for (int i = 0; i < 2; i++)                                                       // prefill each row alone, as the scheduler does
        {
            cache.Begin([slots[i]], prefill[i]);
            rows[i].Add(model.Forward(x.narrow(0, i, 1).narrow(1, 0, prefill[i]), cache)[0]);
        }
        while (cache.LengthOf(slots[0]) < seq)                                            // then one token per step, both rows while both have one
        {
            var active = Enumerable.Range(0, 2).Where(i => cache.LengthOf(slots[i]) < seq).ToArray();
            cache.Begin(active.Select(i => slots[i]).ToArray(), 1);
            var ids = stack(active.Select(i => x[i].narrow(0, cache.LengthOf(slots[i]), 1)).ToArray());   // [B_active, 1]
            var logits = model.Forward(ids, cache);                                        // [B_active, 1, vocab]
            for (int j = 0; j < active.Length; j++) rows[active[j]].Add(logits[j]);
        }
        cache.End();
        var all = stack(rows.Select(row => cat(row, dim: 0)).ToArray());                  // [B, T, vocab]
        double err = (all.to(ScalarType.Float64) - r.T["ref.logits"].to(ScalarType.Float64)).abs().max().item<double>()
                   / r.T["ref.logits"].abs().max().item<float>();
        Assert.True(err <= LogitsTol, $"{family}: batched decoding logits rel. error {err:E2} > {LogitsTol:E0}");
    }
}
