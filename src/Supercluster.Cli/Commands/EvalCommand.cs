using System.CommandLine;
using System.Text.Json.Nodes;
using Supercluster.Checkpointing;
using Supercluster.Data;
using Supercluster.Evaluation;
using Supercluster.Runtime;
using Supercluster.Tokenization;
using Supercluster.Training;

namespace Supercluster.Cli.Commands;

/// <summary>
/// <c>eval</c>: validation loss and perplexity of a checkpoint on prepared data, accuracy on multiple-choice task files
/// (docs/evaluation.md), and bits per byte of text files; any of the three in one run, one line per file.
/// </summary>
public static class EvalCommand
{
    public static Command Create()
    {
        var checkpoint = new Option<string>("--checkpoint") { Description = "Checkpoint directory, or a run directory", Required = true };
        var data = new Option<string?>("--data") { Description = "Directory written by prepare: validation loss and perplexity" };
        var split = new Option<string>("--split") { Description = "val or train", DefaultValueFactory = _ => "val" };
        var tokens = new Option<long>("--eval-tokens") { Description = "Validation tokens (the first ⌈N / context⌉ rows of the split; train's default too)", DefaultValueFactory = _ => Evaluator.DefaultTokens };
        var task = new Option<string[]>("--task") { Description = "Multiple-choice task JSONL (HellaSwag as published, or {context, endings, label}); acc and acc_norm as llm.c; repeatable or comma-separated" };
        var limit = new Option<int>("--limit") { Description = "Only the first N questions of each task file (0 = all)", DefaultValueFactory = _ => 0 };
        var bpb = new Option<string[]>("--bpb") { Description = "UTF-8 text file: bits per byte (comparable across tokenizers); repeatable" };
        var stride = new Option<int?>("--bpb-stride") { Description = "Tokens a bits-per-byte window advances (default the model context: disjoint windows)" };
        var batch = new Option<int>("--batch-size") { Description = "Rows per forward", DefaultValueFactory = _ => 8 };
        var device = new Option<string>("--device") { DefaultValueFactory = _ => "auto" };
        var json = new Option<bool>("--json") { Description = "Print one JSON object with every number" };

        var cmd = new Command("eval", "Validation loss, multiple-choice task accuracy and bits per byte of a checkpoint");
        HelpExamples.Add(cmd, "eval --checkpoint runs/sotu --data data/sotu-byte",
            "eval --checkpoint runs/sotu --task hellaswag_val.jsonl --bpb speech.txt --json");
        foreach (var o in new Option[] { checkpoint, data, split, tokens, task, limit, bpb, stride, batch, device, json }) cmd.Options.Add(o);
        cmd.SetAction(parse =>
        {
            string? dataDir = parse.GetValue(data);
            var tasks = (parse.GetValue(task) ?? []).SelectMany(TaskSet.Files).ToList();
            string[] texts = parse.GetValue(bpb) ?? [];
            if (dataDir is null && tasks.Count == 0 && texts.Length == 0)
                throw new BadInputException("eval needs --data DIR (validation loss), --task FILE (multiple choice) or --bpb FILE (bits per byte)");
            if (parse.GetValue(limit) < 0) throw new BadInputException($"--limit = {parse.GetValue(limit)}, expected ≥ 0 (0 = all)");
            int b = parse.GetValue(batch);
            if (b <= 0) throw new BadInputException($"--batch-size = {b}, expected a positive number");
            // Every input is read (and refused) before the model is loaded: a bad file costs no time.
            var sets = tasks.Select(f => TaskSet.Load(f, parse.GetValue(limit))).ToList();
            var textsRead = texts.Select(f => (Path: f, Text: BitsPerByte.ReadText(f))).ToList();

            CliRunner.LoadTorch(parse);
            var dev = DeviceSelect.Resolve(parse.GetValue(device)!);
            var (model, tokName, dir) = ModelCheckpoint.LoadForInference(parse.GetValue(checkpoint)!, dev);
            using var _ = model;
            var tokenizer = Tokenizers.Create(tokName);
            bool asJson = parse.GetValue(json);
            var report = new JsonObject { ["checkpoint"] = dir, ["tokenizer"] = tokName };
            void Say(string line) { if (!asJson) Console.WriteLine(line); }

            if (dataDir is not null)
            {
                var meta = DatasetMeta.Load(dataDir);
                if (meta.Tokenizer != tokName || meta.VocabSize != model.Config.VocabSize)
                    throw new BadInputException($"--data {dataDir}: tokenizer {meta.Tokenizer} (vocab {meta.VocabSize}) does not match the checkpoint's {tokName} (vocab {model.Config.VocabSize})");
                int t = model.Config.SeqLen;
                using var rows = Evaluator.OpenRows(dataDir, parse.GetValue(split)!, t);
                var r = Evaluator.Evaluate(model, rows, b, t, parse.GetValue(tokens), dev);
                Say($"{dir}: {parse.GetValue(split)} loss {r.Loss:F4}, perplexity {Math.Exp(r.Loss):F2} over {r.Tokens:N0} tokens");
                report["loss"] = new JsonObject { ["split"] = parse.GetValue(split), ["loss"] = r.Loss, ["perplexity"] = Math.Exp(r.Loss), ["tokens"] = r.Tokens };
            }
            var taskResults = new JsonArray();
            foreach (var set in sets)
            {
                var (r, _) = TaskEval.Evaluate(model, tokenizer, set, b, dev);
                Say(TaskEval.Describe(r));
                taskResults.Add(TaskEval.ToJson(r));
            }
            if (sets.Count > 0) report["tasks"] = taskResults;
            var bpbResults = new JsonArray();
            foreach (var (path, text) in textsRead)
            {
                var r = BitsPerByte.Measure(model, tokenizer, text, path, b, dev, parse.GetValue(stride));
                Say(BitsPerByte.Describe(r));
                bpbResults.Add(new JsonObject
                {
                    ["file"] = Path.GetFileName(path), ["bpb"] = r.Bpb, ["nats"] = r.Nats, ["tokens"] = r.Tokens, ["bytes"] = r.Bytes, ["nats_per_token"] = r.NatsPerToken,
                });
            }
            if (textsRead.Count > 0) report["bpb"] = bpbResults;
            if (asJson) Console.WriteLine(report.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }));
            return 0;
        });
        return cmd;
    }
}
