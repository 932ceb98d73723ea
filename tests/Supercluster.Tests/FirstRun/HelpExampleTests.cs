using System.CommandLine;
using System.Reflection;
using System.Text.RegularExpressions;
using Supercluster.Cli;

namespace Supercluster.Tests.FirstRun;

/// <summary>
/// <c>--help</c> and every verb's help end with example command lines (as git and torchrun show), and every example
/// parses against the real verb: its flags exist, its required options are there, its values have the right types.
/// </summary>
[Collection("Console")]
public class HelpExampleTests
{
    /// <summary>Every verb of the CLI: each <c>Commands/*Command.cs</c> with a static <c>Create()</c>.</summary>
    static List<Command> Verbs() =>
        typeof(HelpExamples).Assembly.GetTypes()
            .Where(t => t.Namespace == "Supercluster.Cli.Commands")
            .Select(t => t.GetMethod("Create", BindingFlags.Public | BindingFlags.Static, Type.EmptyTypes))
            .Where(m => m is not null && m.ReturnType == typeof(Command))
            .Select(m => (Command)m!.Invoke(null, null)!)
            .ToList();

    static RootCommand Root(IEnumerable<Command> verbs)
    {
        var root = new RootCommand("test");
        root.Options.Add(GlobalOptions.LibTorch);
        root.Options.Add(GlobalOptions.Verbose);
        foreach (var v in verbs) root.Subcommands.Add(v);
        return root;
    }

    /// <summary>The indented lines of a help section ("Commands:", "Examples:") up to the next blank line.</summary>
    static List<string> Section(string help, string title)
    {
        var lines = help.ReplaceLineEndings("\n").Split('\n');
        int start = Array.FindIndex(lines, l => l == title);
        Assert.True(start >= 0, $"no '{title}' section in:\n{help}");
        return lines.Skip(start + 1).TakeWhile(l => l.Length > 0).Select(l => l.Trim()).ToList();
    }

    [Fact]
    public void The_programs_help_shows_an_example_for_every_verb_it_lists()
    {
        var r = CliProcess.Run("--help");
        Assert.True(r.ExitCode == 0, r.Err);
        var verbs = Section(r.Out, "Commands:").Select(l => l.Split(' ')[0]).ToList();
        Assert.Contains("train", verbs);
        var examples = Section(r.Out, "Examples:");
        foreach (var verb in verbs)
            Assert.True(examples.Any(e => e.StartsWith($"{HelpExamples.Program} {verb} ") || e == $"{HelpExamples.Program} {verb}"), $"--help shows no example of '{verb}'");
        // The verbs the tests below check are the program's verbs.
        Assert.Equal(verbs.Order(), Verbs().Select(v => v.Name).Order());
    }

    [Fact]
    public void Every_example_parses_against_its_verb()
    {
        var verbs = Verbs();
        var root = Root(verbs);
        foreach (var verb in verbs)
        {
            var examples = HelpExamples.Of(verb);
            Assert.True(examples.Count > 0, $"'{verb.Name}' has no help example");
            foreach (var example in examples)
            {
                Assert.StartsWith(verb.Name + (example == verb.Name ? "" : " "), example);
                var parse = root.Parse(example);
                Assert.True(parse.Errors.Count == 0, $"'{example}': {string.Join("; ", parse.Errors.Select(e => e.Message))}");
                Assert.Same(verb, parse.CommandResult.Command);
            }
        }
        // The same check rejects a wrong example.
        Assert.NotEmpty(root.Parse("train --data data/sotu-byte --no-such-flag 3").Errors);
        Assert.NotEmpty(root.Parse("eval --data data/sotu-byte").Errors);
    }

    [Fact]
    public void Each_verbs_help_ends_with_its_examples_even_without_its_required_options()
    {
        var verbs = Verbs();
        foreach (var verb in verbs)
        {
            var (code, output, err) = InProcessCli.Run(Verbs(), verb.Name, "--help");
            Assert.True(code == 0, $"{verb.Name} --help: {err}");
            Assert.Contains("Usage:", output);
            var examples = HelpExamples.Of(verb);
            var shown = Section(output, examples.Count == 1 ? "Example:" : "Examples:");
            Assert.Equal(examples.Select(e => $"{HelpExamples.Program} {e}"), shown);
            Assert.Matches(new Regex(@"Example(s)?:\n(  .*\n)+\s*$"), output.ReplaceLineEndings("\n"));   // the last section
        }
    }
}
