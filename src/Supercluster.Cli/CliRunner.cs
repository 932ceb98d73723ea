using System.CommandLine;
using System.CommandLine.Help;
using System.CommandLine.Invocation;
using System.Runtime.CompilerServices;
using Supercluster.Runtime;

namespace Supercluster.Cli;

/// <summary>Options every verb understands.</summary>
public static class GlobalOptions
{
    public static readonly Option<string?> LibTorch = new("--libtorch")
    {
        Description = $"Folder with libtorch (e.g. <python>/site-packages/torch/lib for CUDA); default ${LibTorchLoader.EnvVar} or the CPU package",
        Recursive = true,
    };

    public static readonly Option<bool> Verbose = new("--verbose", "-v")
    {
        Description = "Say more about what is loaded and why",
        Recursive = true,
    };
}

/// <summary>Parses, runs one verb, and turns bad input into one line on stderr with exit code 2.</summary>
public static class CliRunner
{
    public const int BadInputExit = 2;
    public const int DiskFullExit = 1;

    /// <summary>Verbs that register their own SIGINT/SIGTERM handlers.</summary>
    public static readonly HashSet<string> OwnTermination = ["serve"];

    public static int Run(RootCommand root, string[] args)
    {
        HelpExamples.Install(root);
        var parse = root.Parse(args);
        if (parse.Errors.Count > 0 && !args.Contains("--help") && !args.Contains("-h"))
        {
            Console.Error.WriteLine($"error: {parse.Errors[0].Message}");
            return BadInputExit;
        }
        try
        {
            // A verb in OwnTermination handles SIGINT/SIGTERM itself (serve drains its streams for longer than the 2 s default).
            return parse.Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false,
                ProcessTerminationTimeout = OwnTermination.Contains(parse.CommandResult.Command.Name) ? null : TimeSpan.FromSeconds(2) });
        }
        catch (BadInputException e)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            return BadInputExit;
        }
        catch (IOException e) when (Checkpointing.DurableFile.IsDiskFull(e))
        {
            // One line instead of an unhandled exception (SIGABRT); a checkpoint write has removed its partial files.
            Console.Error.WriteLine($"error: {(e is Checkpointing.DiskFullException ? e.Message : $"disk full: {e.Message}")}");
            return DiskFullExit;
        }
    }

    /// <summary>Loads libtorch as the global options say; verbs that use tensors call this first.</summary>
    public static LibTorchLoader.LoadReport LoadTorch(ParseResult parse)
    {
        bool verbose = parse.GetValue(GlobalOptions.Verbose);
        return LibTorchLoader.EnsureLoaded(parse.GetValue(GlobalOptions.LibTorch), verbose ? m => Console.Error.WriteLine($"[runtime] {m}") : null);
    }
}

/// <summary>
/// Example command lines at the end of help, as git and torchrun show: a verb's own under <c>VERB --help</c>, and the
/// first of every verb under <c>--help</c>. Each verb registers its examples next to its definition (Commands/*.cs).
/// </summary>
public static class HelpExamples
{
    /// <summary>How the examples call the program (the launcher at the repository root, as the README does).</summary>
    public const string Program = "./supercluster";

    static readonly ConditionalWeakTable<Command, string[]> Table = new();

    /// <summary>Registers <paramref name="verb"/>'s examples: its command lines after the program name, starting with the verb.</summary>
    public static void Add(Command verb, params string[] examples) => Table.AddOrUpdate(verb, examples);

    /// <summary>The examples registered for <paramref name="verb"/> (none: empty).</summary>
    public static IReadOnlyList<string> Of(Command verb) => Table.TryGetValue(verb, out var e) ? e : [];

    /// <summary>Makes the root's (recursive) help option print the examples after the usual help.</summary>
    public static void Install(RootCommand root)
    {
        var help = root.Options.OfType<HelpOption>().FirstOrDefault();
        if (help?.Action is { } inner and not WithExamples) help.Action = new WithExamples(inner);
    }

    /// <summary>The examples section of <paramref name="command"/>'s help: its own, or for the root one per verb.</summary>
    public static string Section(Command command)
    {
        var lines = command is RootCommand
            ? command.Subcommands.Where(v => !v.Hidden).Select(v => Of(v).FirstOrDefault()).OfType<string>().ToList()
            : Of(command).ToList();
        if (lines.Count == 0) return "";
        return (lines.Count == 1 ? "Example:" : "Examples:") + Environment.NewLine
             + string.Concat(lines.Select(l => $"  {Program} {l}{Environment.NewLine}"));
    }

    sealed class WithExamples : SynchronousCommandLineAction
    {
        readonly CommandLineAction inner;

        public WithExamples(CommandLineAction inner) => this.inner = inner;

        public override bool ClearsParseErrors => inner.ClearsParseErrors;   // help shows even when required options are missing

        public override int Invoke(ParseResult parse)
        {
            int code = inner is SynchronousCommandLineAction s ? s.Invoke(parse) : ((AsynchronousCommandLineAction)inner).InvokeAsync(parse).GetAwaiter().GetResult();
            string section = Section(parse.CommandResult.Command);
            if (section.Length > 0) parse.InvocationConfiguration.Output.Write(section + Environment.NewLine);
            return code;
        }
    }
}
