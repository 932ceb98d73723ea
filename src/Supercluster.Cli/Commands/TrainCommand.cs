using System.CommandLine;
using Supercluster.Training;

namespace Supercluster.Cli.Commands;

/// <summary><c>train</c>: train a model on prepared shards.</summary>
public static class TrainCommand
{
    public static Command Create()
    {
        var data = new Option<string>("--data") { Description = "Directory written by prepare", Required = true };
        var outDir = new Option<string>("--out") { Description = "Run directory (metrics.jsonl, config.json, checkpoints/)", DefaultValueFactory = _ => "runs/run" };
        var model = new Option<string>("--model") { Description = "Preset: tiny, small, gpt2, gpt2-medium, gpt2-large, gpt2-xl, llama-tiny, llama-small, llama-110m", DefaultValueFactory = _ => "small" };
        var nLayer = new Option<int?>("--n-layer") { Description = "Override the preset's layer count" };
        var nHead = new Option<int?>("--n-head") { Description = "Override the preset's head count" };
        var nEmbd = new Option<int?>("--n-embd") { Description = "Override the preset's width" };
        var seqLen = new Option<int?>("--seq-len") { Description = "Training sequence length (≤ the model context; default the context)" };
        var batch = new Option<int>("--batch-size") { Description = "Sequences per micro-batch", DefaultValueFactory = _ => 8 };
        var totalBatch = new Option<long?>("--total-batch-tokens") { Description = "Tokens per optimizer step; gradient accumulation = this / (batch × seq-len)" };
        var steps = new Option<int>("--steps") { Description = "Optimizer steps", DefaultValueFactory = _ => 100 };
        var lr = new Option<double>("--lr") { Description = "Peak learning rate", DefaultValueFactory = _ => 1e-3 };
        var warmup = new Option<int?>("--warmup") { Description = "Linear warmup steps (default min(100, steps/10))" };
        var minLr = new Option<double>("--min-lr-ratio") { Description = "Final learning rate as a fraction of the peak", DefaultValueFactory = _ => 0.1 };
        var wd = new Option<double>("--weight-decay") { Description = "AdamW decoupled weight decay (matrices only)", DefaultValueFactory = _ => 0.1 };
        var clip = new Option<double>("--grad-clip") { Description = "Clip the global gradient norm (0 = off)", DefaultValueFactory = _ => 1.0 };
        var device = new Option<string>("--device") { Description = "auto, cpu or cuda[:N]", DefaultValueFactory = _ => "auto" };
        var dtype = new Option<string>("--dtype") { Description = "fp32, or bf16 (bf16 matmuls, fp32 master weights and optimizer)", DefaultValueFactory = _ => "fp32" };
        var seed = new Option<long>("--seed") { Description = "Seed for initialisation and data order", DefaultValueFactory = _ => 1337 };
        var evalEvery = new Option<int>("--eval-every") { Description = "Validation every N steps (and at the end; 0 = end only)", DefaultValueFactory = _ => 0 };
        var evalTokens = new Option<long>("--eval-tokens") { Description = "Validation tokens per evaluation", DefaultValueFactory = _ => Evaluator.DefaultTokens };
        var sampleEvery = new Option<int>("--sample-every") { Description = "Print a sample every N steps (and at the end; 0 = never)", DefaultValueFactory = _ => 0 };
        var ckptEvery = new Option<int>("--checkpoint-every") { Description = "Checkpoint every N steps (always at the end)", DefaultValueFactory = _ => 0 };
        var keep = new Option<int>("--keep-checkpoints") { Description = "Keep the newest K checkpoints", DefaultValueFactory = _ => 3 };
        var resume = new Option<string?>("--resume") { Description = "auto (newest complete checkpoint in --out, if any) or a checkpoint path" };
        var initFrom = new Option<string?>("--init-from") { Description = "Start a gpt2 model from Hugging Face GPT-2 weights (model.safetensors)" };
        var backend = new Option<string>("--backend") { Description = "Collectives: auto (NCCL on GPUs, else MPI; none for one rank), mpi or nccl", DefaultValueFactory = _ => "auto" };
        var zero = new Option<int>("--zero") { Description = "1: shard optimizer state across ranks (ZeRO-1)", DefaultValueFactory = _ => 0 };
        var padVocab = new Option<int?>("--pad-vocab") { Description = "Round the vocabulary tables up to a multiple of this (default 128 on a GPU, 1 on a CPU; results are the same)" };
        var optimizer = new Option<string>("--optimizer") { Description = "AdamW implementation: auto (fused CUDA kernel compiled with NVRTC where available) or torch", DefaultValueFactory = _ => "auto" };
        var fault = new Option<string?>("--fault") { Description = "Fault injection: kill:rank=R:step=S, hang:rank=R:step=S, crash-in-checkpoint:step=S" };

        var cmd = new Command("train", "Train a GPT on prepared token shards");
        HelpExamples.Add(cmd, "train --data data/sotu-byte --model small --batch-size 16 --steps 1500 --lr 2e-3 --eval-every 250 --out runs/sotu", "train --data data/sotu-gpt2 --model gpt2 --device cuda --dtype bf16 --batch-size 16 --total-batch-tokens 65536 --steps 500 --out runs/sotu-gpt2");
        foreach (var o in new Option[] { data, outDir, model, nLayer, nHead, nEmbd, seqLen, batch, totalBatch, steps, lr, warmup, minLr, wd, clip, device, dtype, seed, evalEvery, evalTokens, sampleEvery, ckptEvery, keep, resume, initFrom, fault, backend, zero, padVocab, optimizer })
            cmd.Options.Add(o);
        cmd.SetAction(parse =>
        {
            CliRunner.LoadTorch(parse);
            var options = new TrainOptions
            {
                DataDir = parse.GetValue(data)!, OutDir = parse.GetValue(outDir)!, Model = parse.GetValue(model)!,
                NLayer = parse.GetValue(nLayer), NHead = parse.GetValue(nHead), NEmbd = parse.GetValue(nEmbd), SeqLen = parse.GetValue(seqLen),
                BatchSize = parse.GetValue(batch), TotalBatchTokens = parse.GetValue(totalBatch), Steps = parse.GetValue(steps),
                Lr = parse.GetValue(lr), Warmup = parse.GetValue(warmup), MinLrRatio = parse.GetValue(minLr), WeightDecay = parse.GetValue(wd),
                GradClip = parse.GetValue(clip), Device = parse.GetValue(device)!, Dtype = parse.GetValue(dtype)!, Seed = parse.GetValue(seed),
                EvalEvery = parse.GetValue(evalEvery), EvalTokens = parse.GetValue(evalTokens), SampleEvery = parse.GetValue(sampleEvery),
                CheckpointEvery = parse.GetValue(ckptEvery), KeepCheckpoints = parse.GetValue(keep), Resume = parse.GetValue(resume),
                InitFrom = parse.GetValue(initFrom), Fault = parse.GetValue(fault), Backend = parse.GetValue(backend)!, Zero = parse.GetValue(zero),
                PadVocab = parse.GetValue(padVocab), Optimizer = parse.GetValue(optimizer)!,
            };
            var r = new Trainer(options, Console.Out).Run();
            if (Distributed.LaunchEnvironment.Detect().Rank != 0) return 0;
            Console.WriteLine($"done: {r.Steps} steps, final loss {r.FinalLoss:F4}{(r.FinalValLoss is { } v ? $", val loss {v:F4}" : "")}, {r.TokensPerSecond:N0} tokens/s");
            Console.WriteLine($"run: {Path.GetFullPath(r.RunDir)} (metrics.jsonl, config.json); checkpoint: {r.LastCheckpoint}");
            return 0;
        });
        return cmd;
    }
}
