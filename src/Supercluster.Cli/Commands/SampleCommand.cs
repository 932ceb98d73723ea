using System.CommandLine;
using Supercluster.Checkpointing;
using Supercluster.Inference;
using Supercluster.Runtime;
using Supercluster.Tokenization;

namespace Supercluster.Cli.Commands;

/// <summary><c>sample</c>: generate text from a checkpoint, streaming tokens to the terminal.</summary>
public static class SampleCommand
{
    public static Command Create()
    {
        var checkpoint = new Option<string>("--checkpoint") { Description = "Checkpoint directory, or a run directory (its newest checkpoint)", Required = true };
        var prompt = new Option<string>("--prompt") { Description = "Text to continue (empty = start of a document)", DefaultValueFactory = _ => "" };
        var maxNew = new Option<int>("--max-new-tokens") { DefaultValueFactory = _ => 200 };
        var temperature = new Option<double>("--temperature") { Description = "0 = greedy", DefaultValueFactory = _ => 0.8 };
        var topK = new Option<int>("--top-k") { Description = "0 = off", DefaultValueFactory = _ => 200 };
        var topP = new Option<double>("--top-p") { Description = "Nucleus sampling mass (1 = off)", DefaultValueFactory = _ => 1.0 };
        var seed = new Option<long>("--seed") { DefaultValueFactory = _ => 42 };
        var num = new Option<int>("--num-samples") { DefaultValueFactory = _ => 1 };
        var device = new Option<string>("--device") { Description = "auto, cpu or cuda[:N]", DefaultValueFactory = _ => "auto" };
        var noCache = new Option<bool>("--no-kv-cache") { Description = "Recompute the whole sequence each token (reference path)" };
        var adapter = new Option<string?>("--adapter") { Description = "LoRA adapter directory (a LoRA run or checkpoint) merged into --checkpoint" };

        var cmd = new Command("sample", "Generate text from a trained model");
        HelpExamples.Add(cmd, "sample --checkpoint runs/sotu --prompt \"My fellow citizens,\" --max-new-tokens 80 --num-samples 2");
        foreach (var o in new Option[] { checkpoint, prompt, maxNew, temperature, topK, topP, seed, num, device, noCache, adapter }) cmd.Options.Add(o);
        cmd.SetAction(parse =>
        {
            CliRunner.LoadTorch(parse);
            int n = parse.GetValue(num);
            if (n <= 0) throw new BadInputException($"--num-samples = {n}, expected ≥ 1");
            var dev = DeviceSelect.Resolve(parse.GetValue(device)!);
            var (model, tokName, dir) = ModelCheckpoint.LoadForInference(parse.GetValue(checkpoint)!, dev);
            if (parse.GetValue(adapter) is { } a) model = FineTuning.AdapterLoader.MergeInto(model, tokName, a);
            using var _ = model;
            var tok = Tokenizers.Create(tokName);
            string text = parse.GetValue(prompt)!;
            int[] ids = text.Length == 0 ? [tok.EotToken] : tok.Encode(text);
            Console.Error.WriteLine($"[{dir}: {model.Config.ParameterCount():N0} parameters, tokenizer {tokName}]");
            for (int i = 0; i < n; i++)
            {
                if (n > 1) Console.WriteLine($"--- sample {i + 1} ---");
                Console.Write(text);
                var o = new SamplingOptions
                {
                    MaxNewTokens = parse.GetValue(maxNew), Temperature = parse.GetValue(temperature), TopK = parse.GetValue(topK),
                    TopP = parse.GetValue(topP), Seed = parse.GetValue(seed) + i, UseCache = !parse.GetValue(noCache), StopToken = tok.EotToken,
                };
                var streamer = new TokenStreamer(tok, Console.Out);
                Sampler.Generate(model, ids, o, dev, t => { if (t != tok.EotToken) streamer.Add(t); });
                streamer.Flush();
                Console.WriteLine();
            }
            return 0;
        });
        return cmd;
    }
}
