using System.Text.Json;
using System.Text.Json.Nodes;
using Supercluster.Checkpointing;
using Supercluster.Model;
using static TorchSharp.torch;

namespace Supercluster.FineTuning;

/// <summary>
/// LoRA adapters on disk as Hugging Face PEFT writes them, so PEFT (PeftModel.from_pretrained) loads ours and we load
/// its: <c>adapter_model.safetensors</c> with tensors <c>base_model.model.{HF module}.lora_A.weight</c> [r, in] and
/// <c>.lora_B.weight</c> [out, r] (HF modules: <c>model.layers.0.self_attn.q_proj</c> for Llama,
/// <c>transformer.h.0.attn.c_attn</c> for GPT-2, whose Conv1D layers make PEFT set <c>fan_in_fan_out</c>), and
/// <c>adapter_config.json</c> (peft_type LORA, r, lora_alpha, lora_dropout, target_modules, base_model_name_or_path).
/// </summary>
public static class PeftAdapter
{
    public const string WeightsFile = "adapter_model.safetensors", ConfigFile = "adapter_config.json";

    static string Prefix(ModelFamily family) => family == ModelFamily.Gpt2 ? "base_model.model.transformer." : "base_model.model.model.";

    /// <param name="weights">fp32 values by parameter name of <paramref name="model"/> (the master copy under bf16); null: the model's.</param>
    public static void Save(string dir, LoraModel model, string baseModel, string tokenizer, IReadOnlyDictionary<string, Tensor>? weights = null)
    {
        var family = model.Config.Family;
        var names = model.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        var tensors = new List<(string, Tensor)>();
        for (int i = 0; i < model.adapters.Count; i++)
            foreach (var ab in new[] { "lora_A", "lora_B" })
            {
                string name = $"adapters.{i}.{ab}";
                tensors.Add(($"{Prefix(family)}{model.adapters[i].Path}.{ab}.weight", weights?.GetValueOrDefault(name) ?? names[name]));
            }
        SafeTensors.Write(Path.Combine(dir, WeightsFile), tensors, new Dictionary<string, string>
        {
            ["format"] = "pt", ["supercluster.family"] = family.ToString().ToLowerInvariant(), ["supercluster.tokenizer"] = tokenizer,
            ["supercluster.lora_targets"] = string.Join(",", model.Options.Targets),
        });
        var o = model.Options;
        var config = new JsonObject
        {
            ["peft_type"] = "LORA", ["task_type"] = "CAUSAL_LM", ["base_model_name_or_path"] = baseModel, ["revision"] = null,
            ["r"] = o.Rank, ["lora_alpha"] = o.Alpha, ["lora_dropout"] = o.Dropout, ["bias"] = "none",
            ["target_modules"] = new JsonArray(o.Targets.Select(r => LoraOptions.ModuleOf(family, r)).Distinct()
                .Select(m => (JsonNode?)(family == ModelFamily.Gpt2 ? m : m.Split('.')[^1])).ToArray()),
            ["fan_in_fan_out"] = family == ModelFamily.Gpt2, ["inference_mode"] = true, ["init_lora_weights"] = true,
            ["modules_to_save"] = null, ["layers_to_transform"] = null, ["use_rslora"] = false,
        };
        File.WriteAllText(Path.Combine(dir, ConfigFile), config.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
    }

    /// <summary>What an adapter directory holds: its options, base model reference, tokenizer and tensors by module path.</summary>
    public sealed record Adapter(LoraOptions Options, string BaseModel, string? Tokenizer, ModelFamily Family, Dictionary<string, (Tensor A, Tensor B)> Tensors);

    public static Adapter Read(string dir)
    {
        string configPath = Path.Combine(dir, ConfigFile), weightsPath = Path.Combine(dir, WeightsFile);
        if (!File.Exists(configPath)) throw new BadInputException($"--adapter {dir}: {ConfigFile} is missing (not a LoRA adapter directory)");
        if (!File.Exists(weightsPath)) throw new BadInputException($"--adapter {dir}: {WeightsFile} is missing");
        JsonObject c;
        try { c = JsonNode.Parse(File.ReadAllText(configPath)) as JsonObject ?? throw new BadInputException($"{configPath}: expected a JSON object"); }
        catch (JsonException e) { throw new BadInputException($"{configPath}: not JSON ({e.Message.Split(". ")[0]})"); }
        if ((string?)c["peft_type"] is not "LORA") throw new BadInputException($"{configPath}: field 'peft_type' is '{c["peft_type"]}', expected LORA");
        int r = c["r"]?.GetValue<int>() ?? throw new BadInputException($"{configPath}: field 'r' is missing");
        double alpha = c["lora_alpha"]?.GetValue<double>() ?? throw new BadInputException($"{configPath}: field 'lora_alpha' is missing");
        double dropout = c["lora_dropout"]?.GetValue<double>() ?? 0;
        var (tensors, meta) = SafeTensors.Read(weightsPath);
        var family = tensors.Keys.Any(k => k.StartsWith(Prefix(ModelFamily.Gpt2))) ? ModelFamily.Gpt2 : ModelFamily.Llama;
        string prefix = Prefix(family);
        var byPath = new Dictionary<string, (Tensor, Tensor)>();
        foreach (var key in tensors.Keys.Where(k => k.EndsWith(".lora_A.weight")))
        {
            if (!key.StartsWith(prefix)) throw new BadInputException($"{weightsPath}: tensor '{key}' does not start with '{prefix}'");
            string path = key[prefix.Length..^".lora_A.weight".Length];
            string bKey = key[..^".lora_A.weight".Length] + ".lora_B.weight";
            var b = tensors.GetValueOrDefault(bKey) ?? throw new BadInputException($"{weightsPath}: tensor '{bKey}' is missing");
            var a = tensors[key];
            if (a.shape[0] != r || b.shape[1] != r) throw new BadInputException($"{weightsPath}: '{key}' has rank {a.shape[0]}, {ConfigFile} says r = {r}");
            byPath[path] = (a, b);
        }
        if (byPath.Count == 0) throw new BadInputException($"{weightsPath}: no lora_A/lora_B tensors");
        var roles = meta.TryGetValue("supercluster.lora_targets", out var t) ? LoraOptions.ParseTargets(t) : RolesOf(family, byPath.Keys);
        return new Adapter(new LoraOptions(r, alpha, roles, dropout), (string?)c["base_model_name_or_path"] ?? "", meta.GetValueOrDefault("supercluster.tokenizer"), family, byPath);
    }

    /// <summary>Roles from module paths (adapters written by PEFT).</summary>
    static IReadOnlyList<string> RolesOf(ModelFamily family, IEnumerable<string> paths) =>
        LoraOptions.Roles.Where(role => family != ModelFamily.Gpt2 || role != "gate")
            .Where(role => paths.Any(p => p.EndsWith("." + LoraOptions.ModuleOf(family, role)))).ToList();

    /// <summary>Builds the adapted model around <paramref name="baseModel"/> and copies the adapter's tensors in.</summary>
    public static LoraModel Attach(CausalLM baseModel, Adapter adapter, string where)
    {
        if (adapter.Family != baseModel.Config.Family)
            throw new BadInputException($"{where}: adapter for a {adapter.Family} model, the base is {baseModel.Config.Family}");
        var model = new LoraModel(baseModel, adapter.Options, seed: 0);
        LoadInto(model, adapter, where);
        return model;
    }

    /// <summary>Copies an adapter's tensors into a model's adapters (same targets and rank).</summary>
    public static void LoadInto(LoraModel model, Adapter adapter, string where)
    {
        using var _ = no_grad();
        foreach (var a in model.adapters)
        {
            if (!adapter.Tensors.TryGetValue(a.Path, out var t)) throw new BadInputException($"{where}: no adapter tensors for {a.Path}");
            if (!t.A.shape.SequenceEqual(a.lora_A.shape) || !t.B.shape.SequenceEqual(a.lora_B.shape))
                throw new BadInputException($"{where}: adapter for {a.Path} has shapes [{string.Join(",", t.A.shape)}], [{string.Join(",", t.B.shape)}]; the base needs [{string.Join(",", a.lora_A.shape)}], [{string.Join(",", a.lora_B.shape)}]");
            a.lora_A.copy_(t.A);
            a.lora_B.copy_(t.B);
        }
        if (adapter.Tensors.Count != model.adapters.Count)
            throw new BadInputException($"{where}: adapter has {adapter.Tensors.Count} adapted modules, its targets make {model.adapters.Count}");
    }

    /// <summary>
    /// Folds the adapter into the base: every adapted weight becomes W + (α/r)·B·A, and the result is a plain model of the
    /// base architecture (the adapters detached; <paramref name="model"/> is consumed).
    /// </summary>
    public static CausalLM Merge(LoraModel model)
    {
        var merged = model.MergedWeights();
        var baseModel = model.base_model;
        var modules = baseModel.named_modules().ToDictionary(m => m.name, m => m.module);
        using var _ = no_grad();
        foreach (var (path, w) in merged) ((TorchSharp.Modules.Linear)modules[path]).weight!.copy_(w);
        foreach (var w in merged.Values) w.Dispose();
        return baseModel;
    }
}
