using Supercluster.Checkpointing;
using Supercluster.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace Supercluster.Tests.Model;

/// <summary>The MoE layer: router, auxiliary losses, dropless and capacity dispatch, parameter counts, checkpoint names.</summary>
public class MoETests
{
    public MoETests() => TorchSetup.Init();

    static ModelConfig Moe(ModelFamily family, int experts = 4, int k = 2) =>
        (family == ModelFamily.Llama ? TorchSetup.TinyLlama() : TorchSetup.TinyGpt2()) with { Experts = experts, ActiveExperts = k };

    [Fact]
    public void Router_top_k_and_renormalised_gates_match_hand_computed_values()
    {
        // Row 0: logits ln(1, 2, 4, 1) → probs (1, 2, 4, 1)/8 → top-2 = experts 2, 1 with gates 4/6, 2/6.
        // Row 1: logits ln(3, 1, 1, 5) → probs (3, 1, 1, 5)/10 → experts 3, 0 with gates 5/8, 3/8.
        using var logits = tensor(new[] { 0, Math.Log(2), Math.Log(4), 0, Math.Log(3), 0, 0, Math.Log(5) }, [2, 4]).to(ScalarType.Float32);
        var r = Routing.TopK(logits, 2);
        Assert.Equal(new long[] { 2, 1, 3, 0 }, r.Experts.data<long>().ToArray());
        var gates = r.Gates.data<float>().ToArray();
        double[] expected = [4 / 6.0, 2 / 6.0, 5 / 8.0, 3 / 8.0];
        for (int i = 0; i < 4; i++) Assert.Equal(expected[i], gates[i], 6);   // fp32 softmax: 1e-6
        Assert.Equal(ScalarType.Float32, r.Probs.dtype);

        // Load balancing: f = slot fractions over N·K = 4 slots: expert 0: 1/4, 1: 1/4, 2: 1/4, 3: 1/4;
        // P = mean probs = ((1/8 + 3/10)/2, (2/8 + 1/10)/2, (4/8 + 1/10)/2, (1/8 + 5/10)/2); loss = E · Σ f·P = Σ P = 1.
        Assert.Equal(1.0, r.LoadBalancingLoss().item<float>(), 5);
        // z-loss: logsumexp = ln 8 and ln 10 → mean of squares.
        Assert.Equal((Math.Pow(Math.Log(8), 2) + Math.Pow(Math.Log(10), 2)) / 2, r.ZLoss().item<float>(), 4);
    }

    [Fact]
    public void Load_balancing_loss_of_an_imbalanced_router_is_hand_computed()
    {
        // Both tokens choose experts 0 and 1 of 4 (top-2): f = (1/2, 1/2, 0, 0); probs rows (0.4, 0.3, 0.2, 0.1) twice.
        using var logits = tensor(new[] { 0.4, 0.3, 0.2, 0.1, 0.4, 0.3, 0.2, 0.1 }, [2, 4]).log().to(ScalarType.Float32);
        var r = Routing.TopK(logits, 2);
        Assert.Equal(4 * (0.5 * 0.4 + 0.5 * 0.3), r.LoadBalancingLoss().item<float>(), 5);
    }

    /// <summary>
    /// The dense reference: every expert on every token, weighted by a [N, E] gate matrix that is zero off the top-K.
    /// In fp64 (router still fp32, identical in both paths), so the 1e-6 bound tests the dispatch, not rounding.
    /// </summary>
    [Theory]
    [InlineData(ModelFamily.Llama)]
    [InlineData(ModelFamily.Gpt2)]
    public void Dropless_dispatch_equals_dense_masked_reference_in_output_and_gradients(ModelFamily family)
    {
        var config = Moe(family);
        manual_seed(5);
        using var moe = new MoE(config, ExpertShard.All);
        moe.to(ScalarType.Float64);
        using var x0 = randn(3, 5, config.NEmbd, dtype: ScalarType.Float64);

        var x = x0.clone().requires_grad_(true);
        var y = moe.forward(x);
        y.square().sum().backward();
        var grads = moe.named_parameters().ToDictionary(p => p.name, p => p.parameter.grad!.clone());
        var xGrad = x.grad!.clone();
        moe.zero_grad();

        var xr = x0.clone().requires_grad_(true);
        var flat = xr.reshape(-1, config.NEmbd);
        var r = Routing.TopK(nn.functional.linear(flat.to(ScalarType.Float32), moe.gate.weight!.to(ScalarType.Float32)), config.ActiveExperts);
        var weights = zeros(flat.shape[0], config.Experts, dtype: ScalarType.Float32).scatter(1, r.Experts, r.Gates);   // [N, E]
        var yr = zeros_like(flat);
        for (int e = 0; e < config.Experts; e++)
            yr = yr + moe.Expert(e).forward(flat) * weights.select(1, e).unsqueeze(1).to(ScalarType.Float64);
        yr = yr.view(xr.shape);
        yr.square().sum().backward();

        Assert.True(y.allclose(yr, rtol: 0, atol: 1e-6), $"output max diff {(y - yr).abs().max().item<double>()}");
        Assert.True(xGrad.allclose(xr.grad!, rtol: 0, atol: 1e-6), "input gradient");
        foreach (var (name, p) in moe.named_parameters())
            Assert.True(grads[name].allclose(p.grad!, rtol: 0, atol: 1e-6), $"gradient of {name}: max diff {(grads[name] - p.grad!).abs().max().item<double>()}");
        Assert.True(grads.Values.All(g => g.abs().sum().item<double>() > 0), "every parameter got a gradient");
    }

    [Fact]
    public void Capacity_factor_drops_the_latest_slots_and_counts_them()
    {
        var config = Moe(ModelFamily.Llama);
        manual_seed(1);
        using var moe = new MoE(config, ExpertShard.All);
        using (no_grad())
        {
            // Every token prefers expert 0, then 1: feature 0 is 1 for all tokens, the router reads only it.
            moe.gate.weight!.zero_();
            moe.gate.weight![0, 0].fill_(5);
            moe.gate.weight![1, 0].fill_(4);
        }
        using var x = randn(1, 10, config.NEmbd) * 0.01;
        using (no_grad()) x.select(2, 0).fill_(1);
        using var dropless = moe.forward(x).detach().clone();
        Assert.Equal(0, moe.Last!.Dropped);
        Assert.Equal(new long[] { 10, 10, 0, 0 }, moe.Last.SlotsPerExpert);

        moe.CapacityFactor = 1.0;                               // capacity ⌈1 · 10 · 2 / 4⌉ = 5 slots per expert
        using var capped = moe.forward(x).detach();
        Assert.Equal(10, moe.Last!.Dropped);                    // 5 dropped from each of experts 0 and 1
        Assert.True(capped.select(0, 0).narrow(0, 0, 5).allclose(dropless.select(0, 0).narrow(0, 0, 5), rtol: 0, atol: 1e-6), "the first 5 tokens keep both experts");
        Assert.Equal(0, capped.select(0, 0).narrow(0, 5, 5).abs().max().item<float>()); // the last 5 lost both: the block adds nothing

        moe.CapacityFactor = 1.5;                               // ⌈7.5⌉ = 8 per expert: 2 dropped from each
        moe.forward(x).Dispose();
        Assert.Equal(4, moe.Last!.Dropped);
    }

    [Theory]
    [InlineData(ModelFamily.Llama, 1)]
    [InlineData(ModelFamily.Gpt2, 2)]
    public void Parameter_counts_match_the_modules_and_plan(ModelFamily family, int moeEvery)
    {
        var config = Moe(family, experts: 4, k: 2) with { MoeEvery = moeEvery };
        using var model = CausalLM.Create(config, 1);
        Assert.Equal(model.parameters().Sum(p => p.numel()), config.ParameterCount());
        long expert = MoE.Layers(model).First().Moe.Expert(0).parameters().Sum(p => p.numel());
        Assert.Equal(config.ParameterCount() - config.MoeLayers * 2 * expert, config.ActiveParameterCount());
        Assert.Equal(config.NLayer / moeEvery, MoE.Layers(model).Count());
        // plan's count leaves out norms and biases; the difference is exactly those.
        var spec = Supercluster.Planning.FlopsModel.Spec(config);
        long normsAndBiases = model.named_parameters().Where(p => p.parameter.dim() == 1 || (family == ModelFamily.Gpt2 && p.name == "wpe.weight")).Sum(p => p.parameter.numel());
        Assert.Equal(config.ParameterCount() - normsAndBiases, spec.TotalParams);
    }

    [Fact]
    public void An_expert_shard_holds_the_same_initial_weights_as_the_full_model()
    {
        var config = Moe(ModelFamily.Llama, experts: 4, k: 2);
        using var full = CausalLM.Create(config, 9);
        using var shard = CausalLM.Create(config, 9, new ExpertShard(1, 2));
        var fullParams = full.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        var names = shard.named_parameters().Select(p => p.name).ToList();
        Assert.Contains("layers.0.block_sparse_moe.experts.2.w1.weight", names);
        Assert.DoesNotContain("layers.0.block_sparse_moe.experts.0.w1.weight", names);
        foreach (var (name, p) in shard.named_parameters())
            Assert.True(fullParams[name].allclose(p, rtol: 0, atol: 0), name);
    }

    [Fact]
    public void Checkpoint_uses_mixtral_names_and_round_trips()
    {
        using var dir = new TempDir();
        var config = ModelPresets.Get("moe-tiny") with { VocabSize = 257 };
        using var model = CausalLM.Create(config, 3);
        ModelCheckpoint.WriteModel(dir.Path, model, "byte");
        var (tensors, _) = SafeTensors.Read(Path.Combine(dir.Path, ModelCheckpoint.ModelFile));
        Assert.Equal([config.Experts, config.NEmbd], tensors["model.layers.0.block_sparse_moe.gate.weight"].shape);
        Assert.Equal([config.FfnHidden, config.NEmbd], tensors["model.layers.1.block_sparse_moe.experts.7.w1.weight"].shape);
        Assert.Equal([config.NEmbd, config.FfnHidden], tensors["model.layers.1.block_sparse_moe.experts.7.w2.weight"].shape);
        Assert.Equal([config.FfnHidden, config.NEmbd], tensors["model.layers.1.block_sparse_moe.experts.7.w3.weight"].shape);
        Assert.DoesNotContain(tensors.Keys, k => k.Contains(".mlp."));

        using var loaded = CausalLM.Create(ModelCheckpoint.ReadConfig(dir.Path), 4);
        ModelCheckpoint.LoadWeights(loaded, Path.Combine(dir.Path, ModelCheckpoint.ModelFile));
        loaded.eval();
        {
            Assert.Equal(config, loaded.Config);
            using var idx = randint(0, 257, [2, 16]);
            model.eval();
            Assert.True(model.forward(idx).allclose(loaded.forward(idx), rtol: 0, atol: 1e-6));
        }
    }

    [Fact]
    public void Dense_config_json_without_moe_fields_loads_as_dense()
    {
        var json = TorchSetup.TinyGpt2().ToJson();
        var stripped = string.Join("\n", json.Split('\n').Where(l => !l.Contains("expert") && !l.Contains("moe_every")));
        var c = ModelConfig.FromJson(stripped, "config.json");
        Assert.False(c.IsMoE);
        Assert.Equal(TorchSetup.TinyGpt2(), c);
        var bad = Assert.Throws<BadInputException>(() => (TorchSetup.TinyGpt2() with { Experts = 2, ActiveExperts = 3 }).Validate("m"));
        Assert.Contains("active_experts = 3 exceeds experts = 2", bad.Message);
    }
}
