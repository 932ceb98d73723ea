using System.CommandLine;
using Supercluster.Checkpointing;
using Supercluster.FineTuning;
using Supercluster.Runtime;
using TorchSharp;

namespace Supercluster.Cli.Commands;

/// <summary><c>merge</c>: folds a LoRA adapter into its base model and writes a plain checkpoint (served, sampled, fine-tuned like any).</summary>
public static class MergeCommand
{
    public static Command Create()
    {
        var adapter = new Option<string>("--adapter") { Description = "LoRA checkpoint or run directory (adapter_model.safetensors + adapter_config.json)", Required = true };
        var checkpoint = new Option<string?>("--checkpoint") { Description = "Base model checkpoint or run directory (default: the adapter's base_model_name_or_path)" };
        var output = new Option<string>("--out", "-o") { Description = "Run directory to write (OUT/checkpoints/step_N/model.safetensors)", Required = true };
        var cmd = new Command("merge", "Merge a LoRA adapter into its base model: a plain model.safetensors checkpoint");
        HelpExamples.Add(cmd, "merge --adapter runs/ads-lora --out runs/ads-merged");
        foreach (var o in new Option[] { adapter, checkpoint, output }) cmd.Options.Add(o);
        cmd.SetAction(parse =>
        {
            CliRunner.LoadTorch(parse);
            string adapterDir = AdapterLoader.Resolve(parse.GetValue(adapter)!);
            string basePath = parse.GetValue(checkpoint) ?? PeftAdapter.Read(adapterDir).BaseModel;
            if (basePath.Length == 0) throw new BadInputException($"--adapter {adapterDir}: adapter_config.json names no base model; give --checkpoint");
            string outDir = parse.GetValue(output)!;
            var store = new CheckpointStore(outDir);
            if (store.Latest() is { } existing) throw new BadInputException($"--out {outDir}: already holds a checkpoint ({existing}); choose a new directory");
            var (model, tokenizer, baseDir) = ModelCheckpoint.LoadForInference(basePath, torch.CPU);
            using var merged = AdapterLoader.MergeInto(model, tokenizer, adapterDir);
            long step = File.Exists(Path.Combine(adapterDir, ModelCheckpoint.StateFile)) ? ModelCheckpoint.ReadState(adapterDir).Step : 0;
            string dir = store.Save(step, tmp => ModelCheckpoint.WriteModel(tmp, merged, tokenizer));
            Console.WriteLine($"merged {adapterDir} into {baseDir}: {dir}/{ModelCheckpoint.ModelFile}");
            return 0;
        });
        return cmd;
    }
}
