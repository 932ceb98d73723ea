using System.CommandLine;
using Supercluster.Cli.Commands;
using Supercluster.Tokenization;

namespace Supercluster.Cli;

/// <summary>The verbs, in the order <c>--help</c> lists them, and the command tree one invocation needs.</summary>
public static class Verbs
{
    public static readonly IReadOnlyList<(string Name, Func<Command> Create)> All =
    [
        ("env", EnvCommand.Create), ("prepare", PrepareCommand.Create), ("train", TrainCommand.Create),
        ("sample", SampleCommand.Create), ("merge", MergeCommand.Create), ("eval", EvalCommand.Create),
        ("launch", LaunchCommand.Create), ("bench", BenchCommand.Create), ("plan", PlanCommand.Create),
        ("serve", ServeCommand.Create), ("index", IndexCommand.Create), ("search", SearchCommand.Create),
        ("dashboard", DashboardCommand.Create),
    ];

    /// <summary>
    /// The root command for <paramref name="args"/>. When the first argument names a verb, only that verb is built:
    /// building all thirteen is JIT work on every start (~0.05–0.1 s of a one-second <c>prepare</c>, docs/data.md
    /// Speed) and parsing never looks at the others. Anything else (<c>--help</c>, a global option first, a typo)
    /// gets every verb, so help and suggestions are complete.
    /// </summary>
    public static RootCommand Root(string[] args)
    {
        var root = new RootCommand("Supercluster: prepare data, train GPT models on CPU/GPU/clusters, sample, serve and plan runs.");
        root.Options.Add(GlobalOptions.LibTorch);
        root.Options.Add(GlobalOptions.Verbose);
        var named = args.Length > 0 ? All.FirstOrDefault(v => v.Name == args[0]) : default;
        if (named.Name == "prepare") PreloadTokenizer(args);
        foreach (var (_, create) in named.Create is null ? All : [named]) root.Subcommands.Add(create());
        return root;
    }

    /// <summary>
    /// Starts loading <c>prepare</c>'s tokenizer (<c>--tokenizer NAME</c>, default gpt2) on another core while the
    /// command line is built and parsed; <see cref="Tokenizers.Create"/> returns the same instance, waiting if needed.
    /// A bad name is left to the parser and the verb, which report it.
    /// </summary>
    static void PreloadTokenizer(string[] args)
    {
        string name = "gpt2";
        for (int i = 1; i < args.Length; i++)
            if (args[i] == "--tokenizer" && i + 1 < args.Length) name = args[i + 1];
            else if (args[i].StartsWith("--tokenizer=", StringComparison.Ordinal)) name = args[i]["--tokenizer=".Length..];
        if (Tokenizers.Names.Contains(name)) Tokenizers.Preload(name);
    }
}
