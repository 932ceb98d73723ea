using System.Text.Json;
using Supercluster.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace Supercluster.Checkpointing;

/// <summary>
/// Files of one checkpoint directory: <c>config.json</c> (the architecture), <c>model.safetensors</c> (weights under
/// Hugging Face names and layouts), and for training <c>state.json</c> and the optimizer state,
/// <c>optimizer-rankNNNNN-of-NNNNN.safetensors</c> (one file per rank under ZeRO-1, else one).
/// </summary>
public static class ModelCheckpoint
{
    public const string ConfigFile = "config.json", ModelFile = "model.safetensors", StateFile = "state.json";

    /// <summary>Optimizer state of rank <paramref name="rank"/> of <paramref name="files"/>: optimizer-rank00001-of-00004.safetensors.</summary>
    public static string OptimizerFile(int rank, int files) => $"optimizer-rank{rank:D5}-of-{files:D5}.safetensors";
    public const string OptimizerFilePattern = "optimizer-rank*-of-*.safetensors";
    /// <summary>The file count an optimizer file's name states.</summary>
    public static int OptimizerFileCount(string path) => int.Parse(Path.GetFileName(path)[^"00000.safetensors".Length..][..5]);

    /// <param name="parameters">Values to write instead of the model's own, by parameter name (the fp32 master weights
    /// when the model computes in bf16); null: the model's parameters.</param>
    /// <param name="remoteExperts">Expert parallelism: the experts other ranks hold, by parameter name (named like this model's own).</param>
    public static void WriteModel(string dir, CausalLM model, string tokenizer, IReadOnlyDictionary<string, Tensor>? parameters = null,
        IReadOnlyDictionary<string, Tensor>? remoteExperts = null)
    {
        File.WriteAllText(Path.Combine(dir, ConfigFile), model.Config.ToJson());
        var hf = model.HfNames;
        var vocabTables = model.VocabTables;
        int vocab = model.Config.VocabSize;
        IEnumerable<(string Name, Tensor Tensor)> tensors = model.named_parameters().Select(p =>
        {
            var (name, transposed) = hf[p.name];
            Tensor t = parameters?.GetValueOrDefault(p.name) ?? p.parameter;   // frozen parameters have no master copy
            if (vocabTables.Contains(p.name)) t = t.narrow(0, 0, vocab);   // padding rows are not part of the model
            return (name, transposed ? t.t() : t);
        });
        if (remoteExperts is { Count: > 0 })
        {
            // Another rank's expert: the HF name of this rank's sibling (same layer and weight) with the expert index changed.
            var sibling = hf.Where(kv => MoE.IsExpertParameter(kv.Key)).GroupBy(kv => MoE.WithExpert(kv.Key, 0)).ToDictionary(g => g.Key, g => g.First().Value);
            tensors = tensors.Concat(remoteExperts.Select(kv =>
            {
                var (hfName, transposed) = sibling[MoE.WithExpert(kv.Key, 0)];
                return (MoE.WithExpert(hfName, MoE.ExpertOf(kv.Key)), transposed ? kv.Value.t() : kv.Value);
            })).OrderBy(t => t.Item1, StringComparer.Ordinal).ToList();
        }
        SafeTensors.Write(Path.Combine(dir, ModelFile), tensors,
            new Dictionary<string, string> { ["format"] = "pt", ["supercluster.family"] = model.Config.Family.ToString().ToLowerInvariant(), ["supercluster.tokenizer"] = tokenizer });
    }

    /// <summary>Copies weights from a safetensors file in Hugging Face layout (with or without a "transformer." prefix) into the model.</summary>
    public static void LoadWeights(CausalLM model, string path)
    {
        var (tensors, _) = SafeTensors.Read(path);
        try
        {
            var byName = tensors.ToDictionary(kv => kv.Key.StartsWith("transformer.") ? kv.Key["transformer.".Length..] : kv.Key, kv => kv.Value);
            using var _ = no_grad();
            foreach (var (name, p) in model.named_parameters())
            {
                var (hfName, transposed) = model.HfNames[name];
                if (!byName.TryGetValue(hfName, out var src))
                    throw new BadInputException($"{path}: tensor '{hfName}' is missing (expected a {model.Config.Family} checkpoint with n_layer={model.Config.NLayer})");
                var s = transposed ? src.t() : src;
                // Vocabulary tables are stored with the real vocabulary's rows; the model may pad them (zeros).
                var target = model.VocabTables.Contains(name) && p.shape[0] > model.Config.VocabSize ? p.narrow(0, 0, model.Config.VocabSize) : p;
                if (!s.shape.SequenceEqual(target.shape))
                    throw new BadInputException($"{path}: tensor '{hfName}' has shape [{string.Join(", ", src.shape)}], the model config needs [{string.Join(", ", (transposed ? target.t() : target).shape)}]");
                if (!ReferenceEquals(target, p)) p.zero_();
                target.copy_(s);
            }
        }
        finally
        {
            foreach (var t in tensors.Values) t.Dispose();
        }
    }

    public static ModelConfig ReadConfig(string dir)
    {
        string path = Path.Combine(dir, ConfigFile);
        if (!File.Exists(path)) throw new BadInputException($"{path}: missing (not a Supercluster checkpoint?)");
        return ModelConfig.FromJson(File.ReadAllText(path), path);
    }

    public static TrainingState ReadState(string dir)
    {
        string path = Path.Combine(dir, StateFile);
        if (!File.Exists(path)) throw new BadInputException($"{path}: missing (a model-only checkpoint cannot resume training)");
        try { return JsonSerializer.Deserialize<TrainingState>(File.ReadAllText(path), ModelConfig.Json) ?? throw new BadInputException($"{path}: empty"); }
        catch (JsonException e) { throw new BadInputException($"{path}: invalid training state: {e.Message}"); }
    }

    public static void WriteState(string dir, TrainingState state) =>
        File.WriteAllText(Path.Combine(dir, StateFile), JsonSerializer.Serialize(state, ModelConfig.Json));

    /// <summary>Loads a checkpoint (or a run's newest) for inference: the model on <paramref name="device"/> in eval mode, and its tokenizer name.</summary>
    public static (CausalLM Model, string Tokenizer, string Dir) LoadForInference(string path, Device device)
    {
        string dir = CheckpointStore.Resolve(path, Console.Error.WriteLine);
        if (!File.Exists(Path.Combine(dir, ModelFile)) && File.Exists(Path.Combine(dir, "adapter_config.json")))
            throw new BadInputException($"{path}: {dir} holds a LoRA adapter, not a model; give the base with --checkpoint and this with --adapter (or merge it: supercluster merge --adapter {path} --out DIR)");
        var config = ReadConfig(dir);
        var model = CausalLM.Create(config, seed: 0);
        LoadWeights(model, Path.Combine(dir, ModelFile));
        model.to(device);
        model.eval();
        string tokenizer = File.Exists(Path.Combine(dir, StateFile)) ? ReadState(dir).Tokenizer
            : SafeTensors.Read(Path.Combine(dir, ModelFile)).Metadata.GetValueOrDefault("supercluster.tokenizer", "gpt2");
        return (model, tokenizer, dir);
    }
}

/// <summary>What besides weights and optimizer moments a run needs to continue exactly.</summary>
public sealed record TrainingState(long Step, string Tokenizer, Data.DataLoaderState Data, string RngState, long OptimizerSteps, long TokensSeen)
{
    /// <summary>Ranks that wrote the checkpoint (it resumes on any number).</summary>
    public int WorldSize { get; init; } = 1;
    public int Zero { get; init; }
    /// <summary>The rank grid that wrote it (e.g. "TP 2 × CP 1 × PP 1 × DP 2"); informational: checkpoints hold full tensors and resume on any layout.</summary>
    public string? Layout { get; init; }
}
