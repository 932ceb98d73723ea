using System.CommandLine;
using System.Text.Json;
using Supercluster.Training;

namespace Supercluster.Cli.Commands;

/// <summary><c>bench</c>: tokens/s, ms/step, MFU, memory and a phase breakdown of the training step.</summary>
public static class BenchCommand
{
    public static Command Create()
    {
        var flags = new RecordOptions<BenchOptions>(new BenchOptions());
        var json = new Option<string?>("--json") { Description = "Also write the result as JSON to this file" };
        var checkKernels = new Option<bool>("--check-kernels") { Description = "Instead: check the custom CUDA kernels against float64 references and time them against torch ops (exit 1 on a mismatch)" };

        var cmd = new Command("bench", "Measure the training step: tokens/s, ms/step, MFU, memory, time per phase");
        HelpExamples.Add(cmd, "bench --model gpt2 --device cuda --dtype bf16 --batch-size 16", "bench --model small --device cpu --dtype fp32 --seq-len 256 --steps 5");
        foreach (var o in flags.Options.Append(json).Append(checkKernels)) cmd.Options.Add(o);
        cmd.SetAction(parse =>
        {
            CliRunner.LoadTorch(parse);
            var o = flags.Read(parse, new BenchOptions());
            if (parse.GetValue(checkKernels)) return CheckKernels(o.Device);
            var r = Benchmark.Run(o, Console.Error);
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
