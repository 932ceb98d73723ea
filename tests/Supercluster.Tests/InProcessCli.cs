using System.CommandLine;
using Supercluster.Cli;

namespace Supercluster.Tests;

[CollectionDefinition("Console", DisableParallelization = true)]
public class ConsoleCollection;

/// <summary>
/// Runs CLI verbs in-process through the same <see cref="CliRunner"/> as the real program, capturing stdout and stderr.
/// It swaps the process-wide Console streams, so its tests belong to the "Console" collection.
/// </summary>
public static class InProcessCli
{
    public static (int Code, string Out, string Err) Run(IEnumerable<Command> verbs, params string[] args)
    {
        var root = new RootCommand("test");
        root.Options.Add(GlobalOptions.LibTorch);
        root.Options.Add(GlobalOptions.Verbose);
        foreach (var v in verbs) root.Subcommands.Add(v);
        return Run(root, args);
    }

    /// <summary>Runs <paramref name="args"/> against a whole root command (the program's own tree, e.g. <c>Verbs.Root</c>).</summary>
    public static (int Code, string Out, string Err) Run(RootCommand root, params string[] args)
    {
        var (oldOut, oldErr) = (Console.Out, Console.Error);
        var (o, e) = (new StringWriter(), new StringWriter());
        Console.SetOut(o);
        Console.SetError(e);
        try { return (CliRunner.Run(root, args), o.ToString(), e.ToString()); }
        finally { Console.SetOut(oldOut); Console.SetError(oldErr); }
    }
}
