using System.CommandLine;
using Supercluster.Training;

namespace Supercluster.Cli.Commands;

/// <summary><c>train</c>: train a model on prepared shards.</summary>
public static class TrainCommand
{
    public static Command Create()
    {
        var flags = Flags();
        var cmd = new Command("train", "Train a GPT on prepared token shards");
        HelpExamples.Add(cmd, "train --data data/sotu-byte --model small --batch-size 16 --steps 1500 --lr 2e-3 --eval-every 250 --out runs/sotu", "train --data data/sotu-gpt2 --model gpt2 --device cuda --dtype bf16 --batch-size 16 --total-batch-tokens 65536 --steps 500 --out runs/sotu-gpt2",
            "train --data data/sotu-byte --model llama-small --tp 2 --sequence-parallel --batch-size 16 --steps 500 --out runs/sotu-tp2");
        foreach (var o in flags.Options) cmd.Options.Add(o);
        cmd.SetAction(parse =>
        {
            CliRunner.LoadTorch(parse);
            var options = Read(flags, parse);
            var r = new Trainer(options, Console.Out).Run();
            if (Distributed.LaunchEnvironment.Detect().Rank != 0) return 0;
            Console.WriteLine($"done: {r.Steps} steps, final loss {r.FinalLoss:F4}{(r.FinalValLoss is { } v ? $", val loss {v:F4}" : "")}, {r.TokensPerSecond:N0} tokens/s");
            Console.WriteLine($"run: {Path.GetFullPath(r.RunDir)} (metrics.jsonl, config.json); checkpoint: {r.LastCheckpoint}");
            return 0;
        });
        return cmd;
    }

    /// <summary>train's options, derived from <see cref="TrainOptions"/> (flags, types, defaults, help).</summary>
    public static RecordOptions<TrainOptions> Flags() => new(new TrainOptions { DataDir = "" });

    public static TrainOptions Read(RecordOptions<TrainOptions> flags, ParseResult parse) => flags.Read(parse, new TrainOptions { DataDir = "" });
}
