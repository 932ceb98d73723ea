using System.CommandLine;
using Supercluster.Distributed;

namespace Supercluster.Cli.Commands;

/// <summary><c>launch</c>: run <c>train</c> on N ranks of this node via mpirun, restarting it after failures.</summary>
public static class LaunchCommand
{
    public static Command Create()
    {
        var nproc = new Option<int>("--nproc") { Description = "Ranks to start on this node", DefaultValueFactory = _ => 2 };
        var restarts = new Option<int>("--max-restarts") { Description = "Restarts from the newest checkpoint before giving up", DefaultValueFactory = _ => 3 };
        var hang = new Option<double>("--hang-timeout") { Description = "Seconds without progress from a rank before the job counts as hung", DefaultValueFactory = _ => 300 };
        var command = new Argument<string[]>("command") { Description = "The train command, after --", Arity = ArgumentArity.OneOrMore };

        var cmd = new Command("launch", "Run a training job on N ranks (mpirun) and recover it from dead or hung ranks");
        HelpExamples.Add(cmd, "launch --nproc 2 --max-restarts 3 -- train --data data/sotu-byte --model small --steps 1500 --checkpoint-every 100 --out runs/sotu-dp");
        cmd.Options.Add(nproc);
        cmd.Options.Add(restarts);
        cmd.Options.Add(hang);
        cmd.Arguments.Add(command);
        cmd.SetAction(parse => new JobSupervisor(
            new LaunchOptions(parse.GetValue(nproc), parse.GetValue(restarts), parse.GetValue(hang), parse.GetValue(command)!), Console.Out).Run());
        return cmd;
    }
}
