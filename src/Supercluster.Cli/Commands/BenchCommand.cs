using System.CommandLine;
using System.Text.Json;
using Supercluster.Training;

namespace Supercluster.Cli.Commands;

/// <summary><c>bench</c>: tokens/s, ms/step, MFU, memory and a phase breakdown of the training step.</summary>
public static class BenchCommand
{
    public static Command Create()
    {
        var model = new Option<string>("--model") { DefaultValueFactory = _ => "gpt2" };
        var batch = new Option<int>("--batch-size") { DefaultValueFactory = _ => 8 };
        var seq = new Option<int>("--seq-len") { DefaultValueFactory = _ => 1024 };
        var dtype = new Option<string>("--dtype") { Description = "fp32 or bf16", DefaultValueFactory = _ => "bf16" };
        var device = new Option<string>("--device") { DefaultValueFactory = _ => "auto" };
        var steps = new Option<int>("--steps") { Description = "Timed steps", DefaultValueFactory = _ => 20 };
        var warmup = new Option<int>("--warmup") { Description = "Untimed steps first", DefaultValueFactory = _ => 3 };
        var lr = new Option<double>("--lr") { Description = "Constant learning rate", DefaultValueFactory = _ => 6e-4 };
        var seed = new Option<long>("--seed") { DefaultValueFactory = _ => 1337 };
        var data = new Option<string?>("--data") { Description = "Prepared shards (the PyTorch reference reads the same); default synthetic tokens" };
        var pad = new Option<int?>("--pad-vocab") { Description = "Round the vocabulary tables up to a multiple of this (default 128 on a GPU, 1 on a CPU)" };
        var optimizer = new Option<string>("--optimizer") { Description = "AdamW implementation: auto (fused CUDA kernel where NVRTC is found) or torch", DefaultValueFactory = _ => "auto" };
        var saveInit = new Option<string?>("--save-init") { Description = "Write the initial weights (safetensors) for bench/pytorch_reference.py" };
        var peak = new Option<double?>("--peak-tflops") { Description = "Peak TFLOP/s for MFU where the device is not known (e.g. CPU)" };
        var json = new Option<string?>("--json") { Description = "Also write the result as JSON to this file" };
        var checkKernels = new Option<bool>("--check-kernels") { Description = "Instead: check the custom CUDA kernels against float64 references and time them against torch ops (exit 1 on a mismatch)" };

        var cmd = new Command("bench", "Measure the training step: tokens/s, ms/step, MFU, memory, time per phase");
        HelpExamples.Add(cmd, "bench --model gpt2 --device cuda --dtype bf16 --batch-size 16", "bench --model small --device cpu --dtype fp32 --seq-len 256 --steps 5");
        foreach (var o in new Option[] { model, batch, seq, dtype, device, steps, warmup, lr, seed, data, pad, optimizer, saveInit, peak, json, checkKernels }) cmd.Options.Add(o);
        cmd.SetAction(parse =>
        {
            CliRunner.LoadTorch(parse);
            if (parse.GetValue(checkKernels)) return CheckKernels(parse.GetValue(device)!);
            var r = Benchmark.Run(new BenchOptions
            {
                Model = parse.GetValue(model)!, BatchSize = parse.GetValue(batch), SeqLen = parse.GetValue(seq), Dtype = parse.GetValue(dtype)!,
                Device = parse.GetValue(device)!, Steps = parse.GetValue(steps), WarmupSteps = parse.GetValue(warmup), Lr = parse.GetValue(lr),
                Seed = parse.GetValue(seed), DataDir = parse.GetValue(data), PadVocab = parse.GetValue(pad), SaveInit = parse.GetValue(saveInit),
                PeakTflops = parse.GetValue(peak), Optimizer = parse.GetValue(optimizer)!,
            }, Console.Error);
            Console.WriteLine($"device {r.Device}, {r.Dtype}, {r.Parameters:N0} parameters, batch {r.BatchSize} × {r.SeqLen}");
            Console.WriteLine($"tokens/s {r.TokensPerSecond:N0}   ms/step {r.MsPerStep:F1}   MFU {(r.Mfu is { } m ? $"{m:P1} of {r.PeakTflopsUsed:G4} TFLOP/s" : "n/a")}   peak memory {(r.PeakMemoryGiB is { } g ? $"{g:F1} GiB" : "n/a")}");
            Console.WriteLine($"optimizer: {r.Optimizer}");
            Console.WriteLine($"per step: data {r.DataMs:F1} ms, forward {r.ForwardMs:F1} ms, backward {r.BackwardMs:F1} ms, optimizer {r.OptimizerMs:F1} ms");
            Console.WriteLine($"loss: first step {r.FirstLoss:F4}, last step {r.LastLoss:F4}");
            if (parse.GetValue(json) is { } path) File.WriteAllText(path, JsonSerializer.Serialize(r, new JsonSerializerOptions { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower }));
            return 0;
        });
        return cmd;
    }

    static int CheckKernels(string device)
    {
        var dev = Runtime.DeviceSelect.Resolve(device == "auto" ? "cuda" : device);
        var k = KernelCheck.AdamW(dev);
        Console.WriteLine($"fused AdamW: {k.Implementation}");
        Console.WriteLine($"  accuracy vs float64, {k.CheckedElements:N0} elements x {k.Steps} steps: fused {k.FusedRelError:E1}, torch ops {k.TorchRelError:E1} (pass below 1E-005): {(k.Passed ? "PASS" : "FAIL")}");
        Console.WriteLine($"  time per step at {k.TimedElements:N0} elements (GPT-2 124M): fused {k.FusedMs:F2} ms ({k.FusedBandwidthGBs:N0} GB/s at 29 bytes/element), torch ops {k.TorchMs:F2} ms, {k.TorchMs / k.FusedMs:F1}x");
        return k.Passed ? 0 : 1;
    }
}
