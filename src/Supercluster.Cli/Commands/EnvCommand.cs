using System.CommandLine;
using Supercluster.Runtime;

namespace Supercluster.Cli.Commands;

/// <summary><c>env</c>: what this machine offers Supercluster.</summary>
public static class EnvCommand
{
    public static Command Create()
    {
        var cmd = new Command("env", "Print OS, .NET, TorchSharp/libtorch, CPU/CUDA and MPI/NCCL facts");
        HelpExamples.Add(cmd, "env", "env --verbose");
        cmd.SetAction(parse =>
        {
            CliRunner.LoadTorch(parse);
            foreach (var (key, value) in EnvironmentReport.Collect())
                Console.WriteLine($"{key,-22} {value}");
            return 0;
        });
        return cmd;
    }
}
