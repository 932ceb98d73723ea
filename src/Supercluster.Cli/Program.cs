using System.CommandLine;
using Supercluster.Cli;
using Supercluster.Cli.Commands;

// Thin CLI: each verb lives in Commands/<Verb>Command.cs and calls into the Supercluster library.
var root = new RootCommand("Supercluster: prepare data, train GPT models on CPU/GPU/clusters, sample, serve and plan runs.");
root.Options.Add(GlobalOptions.LibTorch);
root.Options.Add(GlobalOptions.Verbose);
root.Subcommands.Add(EnvCommand.Create());
root.Subcommands.Add(PrepareCommand.Create());
root.Subcommands.Add(TrainCommand.Create());
root.Subcommands.Add(SampleCommand.Create());
root.Subcommands.Add(MergeCommand.Create());
root.Subcommands.Add(EvalCommand.Create());
root.Subcommands.Add(LaunchCommand.Create());
root.Subcommands.Add(BenchCommand.Create());
root.Subcommands.Add(PlanCommand.Create());
root.Subcommands.Add(ServeCommand.Create());
root.Subcommands.Add(IndexCommand.Create());
root.Subcommands.Add(SearchCommand.Create());
root.Subcommands.Add(DashboardCommand.Create());
return CliRunner.Run(root, args);
