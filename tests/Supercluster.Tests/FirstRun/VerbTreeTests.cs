using Supercluster.Cli;

namespace Supercluster.Tests.FirstRun;

/// <summary>
/// The program builds only the verb its first argument names (start-up time, docs/data.md Speed): that verb must
/// parse, help and fail exactly as in the whole tree, and anything else must still see every verb.
/// </summary>
[Collection("Console")]
public class VerbTreeTests
{
    static (int Code, string Out, string Err) Run(System.CommandLine.RootCommand root, params string[] args) => InProcessCli.Run(root, args);

    [Fact]
    public void A_named_verb_gets_a_tree_of_that_verb_alone_and_anything_else_every_verb()
    {
        foreach (var (name, create) in Verbs.All)
        {
            Assert.Equal(name, create().Name);
            Assert.Equal([name], Verbs.Root([name, "--help"]).Subcommands.Select(c => c.Name));
        }
        var all = Verbs.All.Select(v => v.Name).ToList();
        Assert.Equal(all, Verbs.Root([]).Subcommands.Select(c => c.Name));
        Assert.Equal(all, Verbs.Root(["--help"]).Subcommands.Select(c => c.Name));
        Assert.Equal(all, Verbs.Root(["--verbose", "prepare"]).Subcommands.Select(c => c.Name));
        Assert.Equal(all, Verbs.Root(["prepar"]).Subcommands.Select(c => c.Name));
    }

    [Theory]
    [InlineData("prepare", "--help")]
    [InlineData("train", "--help")]
    [InlineData("prepare", "--no-such-flag", "1")]
    [InlineData("plan", "--gpus", "many")]
    public void A_verb_alone_helps_and_fails_as_in_the_whole_tree(params string[] args)
    {
        var alone = Run(Verbs.Root(args), args);
        var whole = Run(Verbs.Root([]), args);
        Assert.Equal(whole, alone);
    }
}
