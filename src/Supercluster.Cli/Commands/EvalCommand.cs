using System.CommandLine;
using Supercluster.Checkpointing;
using Supercluster.Data;
using Supercluster.Runtime;
using Supercluster.Training;

namespace Supercluster.Cli.Commands;

/// <summary><c>eval</c>: validation loss and perplexity of a checkpoint on prepared data.</summary>
public static class EvalCommand
{
    public static Command Create()
    {
        var checkpoint = new Option<string>("--checkpoint") { Description = "Checkpoint directory, or a run directory", Required = true };
        var data = new Option<string>("--data") { Description = "Directory written by prepare", Required = true };
        var split = new Option<string>("--split") { Description = "val or train", DefaultValueFactory = _ => "val" };
        var tokens = new Option<long>("--eval-tokens") { Description = "Validation tokens (the first ⌈N / context⌉ rows of the split; train's default too)", DefaultValueFactory = _ => Evaluator.DefaultTokens };
        var batch = new Option<int>("--batch-size") { DefaultValueFactory = _ => 8 };
        var device = new Option<string>("--device") { DefaultValueFactory = _ => "auto" };

        var cmd = new Command("eval", "Validation loss and perplexity of a checkpoint");
        HelpExamples.Add(cmd, "eval --checkpoint runs/sotu --data data/sotu-byte");
        foreach (var o in new Option[] { checkpoint, data, split, tokens, batch, device }) cmd.Options.Add(o);
        cmd.SetAction(parse =>
        {
            CliRunner.LoadTorch(parse);
            var dev = DeviceSelect.Resolve(parse.GetValue(device)!);
            var (model, tokName, dir) = ModelCheckpoint.LoadForInference(parse.GetValue(checkpoint)!, dev);
            using var _ = model;
            var meta = DatasetMeta.Load(parse.GetValue(data)!);
            if (meta.Tokenizer != tokName || meta.VocabSize != model.Config.VocabSize)
                throw new BadInputException($"--data {parse.GetValue(data)}: tokenizer {meta.Tokenizer} (vocab {meta.VocabSize}) does not match the checkpoint's {tokName} (vocab {model.Config.VocabSize})");
            int b = parse.GetValue(batch), t = model.Config.SeqLen;
            using var rows = Evaluator.OpenRows(parse.GetValue(data)!, parse.GetValue(split)!, t);
            var r = Evaluator.Evaluate(model, rows, b, t, parse.GetValue(tokens), dev);
            Console.WriteLine($"{dir}: {parse.GetValue(split)} loss {r.Loss:F4}, perplexity {Math.Exp(r.Loss):F2} over {r.Tokens:N0} tokens");
            return 0;
        });
        return cmd;
    }
}
