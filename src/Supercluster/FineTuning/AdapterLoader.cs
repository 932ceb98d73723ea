using Supercluster.Checkpointing;
using Supercluster.Model;

namespace Supercluster.FineTuning;

/// <summary>
/// A LoRA adapter for inference (<c>sample --adapter</c>, <c>serve --adapter</c>, <c>merge</c>): the adapter directory
/// (a checkpoint directory of a LoRA run, a LoRA run directory and its newest checkpoint, or a PEFT directory) read,
/// checked against the base model, and folded into the base's weights. Merging once makes decoding cost exactly what the
/// base costs; serving several adapters then holds one merged copy of the model per adapter.
/// </summary>
public static class AdapterLoader
{
    /// <summary>The directory holding adapter_config.json: <paramref name="path"/> itself, or a run's newest checkpoint.</summary>
    public static string Resolve(string path)
    {
        if (File.Exists(Path.Combine(path, PeftAdapter.ConfigFile))) return path;
        if (!Directory.Exists(path)) throw new BadInputException($"--adapter {path}: no such directory");
        return CheckpointStore.Resolve(path);
    }

    /// <summary>Reads the adapter at <paramref name="path"/> and merges it into <paramref name="baseModel"/> (in place).</summary>
    public static CausalLM MergeInto(CausalLM baseModel, string baseTokenizer, string path)
    {
        string dir = Resolve(path);
        var adapter = PeftAdapter.Read(dir);
        if (adapter.Tokenizer is { } t && t != baseTokenizer)
            throw new BadInputException($"--adapter {path}: trained with tokenizer '{t}', the base model uses '{baseTokenizer}'");
        bool training = baseModel.training;
        var lora = PeftAdapter.Attach(baseModel, adapter, $"--adapter {path}");
        var merged = PeftAdapter.Merge(lora);
        if (!training) merged.eval();
        return merged;
    }

    /// <summary>"RUN/step_N" for a checkpoint in a run, else the directory's name: the adapter's default served name.</summary>
    public static string DefaultName(string dir)
    {
        var full = Path.GetFullPath(dir).TrimEnd('/');
        var parent = Path.GetDirectoryName(full);
        if (Path.GetFileName(full).StartsWith("step_") && parent is not null && Path.GetFileName(parent) == "checkpoints")
            return Path.GetFileName(Path.GetDirectoryName(parent))!;
        return Path.GetFileName(full);
    }
}
