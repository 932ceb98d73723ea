using Supercluster.Checkpointing;
using Supercluster.Data;
using Supercluster.Model;

namespace Supercluster.FineTuning;

/// <summary>
/// What <c>train --init-from</c> starts from: a checkpoint of this project (a checkpoint directory, or a run directory
/// and its newest complete checkpoint) of any family, whose config.json gives the architecture; or a Hugging Face
/// GPT-2 <c>model.safetensors</c> (no config: the architecture is --model's). Only weights are taken: the optimizer and
/// the step counter start fresh.
/// </summary>
public sealed record InitCheckpoint(string WeightsFile, string Source, ModelConfig? Config, string? Tokenizer)
{
    public static InitCheckpoint Open(string path, DatasetMeta data)
    {
        InitCheckpoint init;
        if (File.Exists(path)) init = new InitCheckpoint(path, path, null, null);
        else if (Directory.Exists(path))
        {
            string dir = CheckpointStore.Resolve(path);
            string weights = Path.Combine(dir, ModelCheckpoint.ModelFile);
            if (!File.Exists(weights))
                throw new BadInputException($"--init-from {path}: {dir} has no {ModelCheckpoint.ModelFile} (a LoRA checkpoint? merge it first: supercluster merge --adapter {dir})");
            init = new InitCheckpoint(weights, dir, ModelCheckpoint.ReadConfig(dir), TokenizerOf(dir));
        }
        else throw new BadInputException($"--init-from {path}: no such checkpoint, run directory or safetensors file");
        if (init.Tokenizer is { } t && t != data.Tokenizer)
            throw new BadInputException($"--init-from {path}: the checkpoint's tokenizer is '{t}', the data's is '{data.Tokenizer}' (prepare the data with --tokenizer {t})");
        if (init.Config is { } c && c.VocabSize != data.VocabSize)
            throw new BadInputException($"--init-from {path}: the checkpoint's vocabulary has {c.VocabSize} tokens, the data's {data.VocabSize}");
        return init;
    }

    /// <summary>The tokenizer a checkpoint was trained with (state.json, else the weights' metadata).</summary>
    public static string TokenizerOf(string dir) => File.Exists(Path.Combine(dir, ModelCheckpoint.StateFile))
        ? ModelCheckpoint.ReadState(dir).Tokenizer
        : SafeTensors.Read(Path.Combine(dir, ModelCheckpoint.ModelFile)).Metadata.GetValueOrDefault("supercluster.tokenizer", "gpt2");
}
