using System.CommandLine;
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

    public static int Run(RootCommand root, string[] args)
    {
        var parse = root.Parse(args);
        if (parse.Errors.Count > 0 && !args.Contains("--help") && !args.Contains("-h"))
        {
            Console.Error.WriteLine($"error: {parse.Errors[0].Message}");
            return BadInputExit;
        }
        try
        {
            return parse.Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
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
