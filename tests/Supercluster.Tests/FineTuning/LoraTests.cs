using Supercluster.Checkpointing;
using Supercluster.Distributed;
using Supercluster.FineTuning;
using Supercluster.Model;
using Supercluster.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Supercluster.Tests.FineTuning;

/// <summary>LoRA composed around the model, masked loss, document masking: the numerical contracts.</summary>
public class LoraTests
{
    public LoraTests() => TorchSetup.Init();

    static long[] Ids(int n, int seed, int vocab = 11) { var r = new Random(seed); return Enumerable.Range(0, n).Select(_ => (long)r.Next(vocab - 1)).ToArray(); }

    /// <summary>Bitwise equality of two tensors.</summary>
    static bool Same(Tensor a, Tensor b) => a.shape.SequenceEqual(b.shape) && a.eq(b).all().item<bool>();

    public static TheoryData<string> Families => new() { "gpt2", "llama" };
    static ModelConfig Config(string family) => family == "gpt2" ? TorchSetup.TinyGpt2() : TorchSetup.TinyLlama();

    [Theory]
    [MemberData(nameof(Families))]
    public void At_step_0_the_adapted_model_is_the_base_model_exactly(string family)
    {
        using var baseModel = CausalLM.Create(Config(family), seed: 1);
        var input = tensor(Ids(16, 2), [2, 8]);
        using var expected = baseModel.forward(input).detach().clone();
        var lora = new LoraModel(baseModel, new LoraOptions(4, 8, LoraOptions.Roles.Where(r => family == "llama" || r != "gate").ToList()), seed: 3);
        Assert.True(Same(lora.forward(input), expected));                        // bitwise: B = 0 makes ΔW exactly 0
        Assert.True(Same(baseModel.forward(input), expected));                    // and the base weights are back after the forward
    }

    [Theory]
    [MemberData(nameof(Families))]
    public void Gradients_and_optimizer_state_exist_for_the_adapters_only(string family)
    {
        var baseModel = CausalLM.Create(Config(family), seed: 1);
        var before = baseModel.named_parameters().ToDictionary(p => p.name, p => p.parameter.detach().clone());
        var lora = new LoraModel(baseModel, new LoraOptions(2, 4, ["q", "v", "down"]), seed: 3);
        using var step = new TrainStep(lora, new SingleProcess(), new TrainStepOptions { BatchSize = 2, SeqLen = 8, WeightDecay = 0.1 });
        long adapterParameters = lora.adapters.parameters().Sum(p => p.numel());
        Assert.Equal(adapterParameters, step.Flat.Count);                                         // only adapters are flattened
        Assert.Equal(adapterParameters * 8 + step.Flat.PaddedCount * 4, step.Optimizer.StateBytes);   // AdamW m, v and decay mask: nothing for the base
        Assert.Equal(baseModel.parameters().Count(), step.Optimizer.Groups.Assignments.Count(a => a.Group == ParameterGroup.Frozen));
        var rng = new Random(5);
        for (int i = 0; i < 3; i++) step.Run((x, y) => { for (int j = 0; j < x.Length; j++) { x[j] = rng.Next(10); y[j] = (x[j] + 1) % 11; } }, 1, 1e-2);
        foreach (var (name, p) in baseModel.named_parameters())
        {
            Assert.True(p.grad is null, name);                                                      // no gradient for the frozen base
            Assert.True(Same(p, before[name]), name);
        }
        Assert.All(lora.adapters, a => Assert.True(a.lora_B.abs().sum().item<float>() > 0));       // B moved off zero
    }

    [Fact]
    public void Under_bf16_the_frozen_base_computes_in_bf16_and_only_the_adapters_have_fp32_masters()
    {
        var baseModel = CausalLM.Create(TorchSetup.TinyLlama(), seed: 1);
        var lora = new LoraModel(baseModel, new LoraOptions(2, 4, ["q", "v"]), seed: 3);
        using var step = new TrainStep(lora, new SingleProcess(), new TrainStepOptions { BatchSize = 2, SeqLen = 8, ComputeDtype = ScalarType.BFloat16 });
        var baseBefore = baseModel.parameters().Select(p => p.detach().clone()).ToList();
        Assert.All(baseModel.parameters(), p => Assert.Equal(ScalarType.BFloat16, p.dtype));
        Assert.Equal(lora.adapters.parameters().Sum(p => p.numel()), step.Flat.Count);
        var rng = new Random(5);
        var losses = Enumerable.Range(0, 4).Select(_ => step.Run((x, y) => { for (int j = 0; j < x.Length; j++) { x[j] = rng.Next(10); y[j] = (x[j] + 1) % 11; } }, 1, 1e-2).Loss).ToList();
        Assert.All(losses, l => Assert.True(double.IsFinite(l)));
        Assert.All(baseModel.parameters().Zip(baseBefore), z => Assert.True(Same(z.First, z.Second)));
        Assert.All(lora.adapters, a => Assert.True(a.lora_B.abs().sum().to(ScalarType.Float32).item<float>() > 0));
    }

    static LoraModel Trained(string family, out CausalLM baseModel)
    {
        baseModel = CausalLM.Create(Config(family), seed: 1);
        var lora = new LoraModel(baseModel, new LoraOptions(4, 8, family == "gpt2" ? ["q", "o", "up", "down"] : ["q", "k", "v", "o", "gate"]), seed: 3);
        using (no_grad()) foreach (var a in lora.adapters) a.lora_B.normal_(0, 0.05);                // as if trained
        return lora;
    }

    [Theory]
    [MemberData(nameof(Families))]
    public void Merged_weights_compute_what_the_adapter_computes(string family)
    {
        var lora = Trained(family, out _);
        lora.eval();
        var input = tensor(Ids(16, 4), [2, 8]);
        using var adapted = lora.forward(input).detach().clone();
        var merged = PeftAdapter.Merge(lora);
        // 1e-5: the same sums, in fp32, associated differently ((W + s·BA)x vs the per-forward W' of the adapter).
        Assert.True(merged.forward(input).allclose(adapted, rtol: 0, atol: 1e-5));
        using var baseAgain = CausalLM.Create(Config(family), seed: 1);
        Assert.False(baseAgain.forward(input).allclose(adapted, rtol: 0, atol: 1e-3));               // the adapter changed something
    }

    [Theory]
    [MemberData(nameof(Families))]
    public void Peft_files_round_trip_with_peft_tensor_names(string family)
    {
        using var dir = new TempDir();
        var lora = Trained(family, out _);
        PeftAdapter.Save(dir.Path, lora, "base/run", "byte");
        var names = SafeTensors.Read(Path.Combine(dir.Path, PeftAdapter.WeightsFile)).Tensors.Keys.ToList();
        Assert.Contains(family == "gpt2" ? "base_model.model.transformer.h.0.attn.c_attn.lora_A.weight" : "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", names);
        Assert.Contains(family == "gpt2" ? "base_model.model.transformer.h.1.mlp.c_proj.lora_B.weight" : "base_model.model.model.layers.1.mlp.gate_proj.lora_B.weight", names);
        var config = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(dir.Path, PeftAdapter.ConfigFile)))!;
        Assert.Equal(4, (int)config["r"]!);
        Assert.Equal("base/run", (string?)config["base_model_name_or_path"]);

        var read = PeftAdapter.Read(dir.Path);
        var again = PeftAdapter.Attach(CausalLM.Create(Config(family), seed: 1), read, dir.Path);
        var input = tensor(Ids(16, 6), [2, 8]);
        lora.eval(); again.eval();
        Assert.True(Same(again.forward(input), lora.forward(input)));
        Assert.Contains("r = 2", Assert.Throws<BadInputException>(() =>
        {
            File.WriteAllText(Path.Combine(dir.Path, PeftAdapter.ConfigFile), config.ToJsonString().Replace("\"r\":4", "\"r\":2"));
            PeftAdapter.Read(dir.Path);
        }).Message);
    }

    [Fact]
    public void Changing_a_masked_target_leaves_the_loss_unchanged_and_an_all_masked_batch_is_skipped()
    {
        using var model = CausalLM.Create(TorchSetup.TinyGpt2(), seed: 1);
        var (x, y) = (Ids(16, 1), Ids(16, 2));
        var m = Enumerable.Range(0, 16).Select(i => (byte)(i % 3 == 0 ? 1 : 0)).ToArray();
        double Loss(long[] targets) => NextTokenLoss.MaskedSum(model, x, targets, m, 2, 8, CPU, documentEnd: null).item<float>();
        double loss = Loss(y);
        var changed = (long[])y.Clone();
        changed[1] = (changed[1] + 5) % 11;                                                              // a masked (user) position
        Assert.Equal(loss, Loss(changed));
        changed[3] = (changed[3] + 5) % 11;                                                              // a trained position
        Assert.NotEqual(loss, Loss(changed));

        var before = model.parameters().Select(p => p.detach().clone()).ToList();
        using var step = new TrainStep(model, new SingleProcess(), new TrainStepOptions { BatchSize = 2, SeqLen = 8 });
        var r = step.RunMasked((xs, ys, ms) => { x.CopyTo(xs, 0); y.CopyTo(ys, 0); Array.Clear(ms); }, 2, 1e-2, documentEnd: null);
        Assert.True(r.Skipped);
        Assert.All(model.parameters().Zip(before), z => Assert.True(Same(z.First, z.Second)));
    }

    [Fact]
    public void The_masked_loss_is_the_mean_over_trained_tokens_of_the_global_batch_under_accumulation()
    {
        // Two rows with 1 and 7 trained targets: one batch of 2 rows and two accumulated micro-batches of 1 row must give
        // the same loss and the same gradient (a mean of per-micro-batch means would weight the 1-token row 4× more).
        var (x, y) = (Ids(16, 3), Ids(16, 4));
        var m = Enumerable.Range(0, 16).Select(i => (byte)(i == 2 || i >= 9 ? 1 : 0)).ToArray();
        (double Loss, Tensor W) Run(int batch, int accumulation)
        {
            var model = CausalLM.Create(TorchSetup.TinyGpt2(), seed: 1);
            var step = new TrainStep(model, new SingleProcess(), new TrainStepOptions { BatchSize = batch, SeqLen = 8, GradClip = 0 });
            int k = 0;
            var r = step.RunMasked((xs, ys, ms) =>
            {
                Array.Copy(x, k, xs, 0, xs.Length); Array.Copy(y, k, ys, 0, ys.Length); Array.Copy(m, k, ms, 0, ms.Length); k += xs.Length;
            }, accumulation, 1e-2, documentEnd: null);
            return (r.Loss, step.Flat.Gradients.clone());   // the averaged gradient the optimizer took (Adam would amplify fp noise in ~0 gradients to ±lr)
        }
        var (one, w1) = Run(2, 1);
        var (two, w2) = Run(1, 2);
        // 1e-6: the same per-token losses summed in a different order (fp32).
        Assert.Equal(one, two, 1e-6);
        Assert.True(w1.allclose(w2, rtol: 0, atol: 1e-6));
    }

    [Theory]
    [MemberData(nameof(Families))]
    public void A_packed_conversation_computes_what_it_computes_alone(string family)
    {
        using var model = CausalLM.Create(Config(family), seed: 1);
        const long eot = 10;
        long[] first = [1, 2, 3, eot], second = [4, 5, 6, 7, eot];
        long[] packed = [.. first, .. second, eot, eot, eot, eot, eot, eot, eot];   // T = 16
        long[] alone = [.. second, eot, eot, eot, eot, eot, eot, eot, eot, eot, eot, eot];
        Tensor Logits(long[] ids)
        {
            using var mask = new DocumentMask(ids, 1, 16, eot, CPU);
            return model.Forward(tensor(ids, [1, 16]), mask);
        }
        var a = Logits(packed).narrow(1, first.Length, second.Length);
        var b = Logits(alone).narrow(1, 0, second.Length);
        // 1e-5: identical arithmetic except that masked keys add exact zeros to the softmax sums.
        Assert.True(a.allclose(b, rtol: 0, atol: 1e-5));
        using var plain = model.forward(tensor(packed, [1, 16]));
        Assert.False(plain.narrow(1, first.Length, second.Length).allclose(b, rtol: 0, atol: 1e-3));   // without the mask it would differ
    }
}
