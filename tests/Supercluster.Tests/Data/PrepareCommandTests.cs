using System.CommandLine;
using Parquet;
using Parquet.Schema;
using Supercluster.Cli;
using Supercluster.Cli.Commands;
using Supercluster.Data;

namespace Supercluster.Tests.Data;

/// <summary>Runs the <c>prepare</c> verb in-process; swaps Console streams, so it runs alone.</summary>
[Collection("Console")]
public class PrepareCommandTests
{
    static (int Code, string Out, string Err) Run(params string[] args) =>
        InProcessCli.Run([PrepareCommand.Create()], args);

    [Fact]
    public void MalformedInputExitsTwoWithOneLineAndNoOutput()
    {
        using var dir = new TempDir();
        File.WriteAllLines(dir["c.jsonl"], ["{\"text\":\"fine\"}", "{\"text\":\"also fine\"}", "not json"]);
        var (code, _, err) = Run("prepare", "--input", dir["c.jsonl"], "--out", dir["out"], "--tokenizer", "byte");
        Assert.Equal(2, code);
        var lines = err.Split('\n', StringSplitOptions.RemoveEmptyEntries).Where(l => !l.StartsWith("prepare:")).ToArray(); // progress lines aside
        var line = Assert.Single(lines);
        Assert.StartsWith($"error: {dir["c.jsonl"]}:3: malformed JSON (", line);
        Assert.True(!Directory.Exists(dir["out"]) || !Directory.EnumerateFileSystemEntries(dir["out"]).Any());
    }

    [Theory]
    [InlineData("--tokenizer", "gpt9", "unknown tokenizer 'gpt9'")]
    [InlineData("--format", "xml", "unknown format 'xml'")]
    [InlineData("--sample", "sotu", "exactly one of --input")]
    public void BadOptionsExitTwo(string option, string value, string message)
    {
        using var dir = new TempDir();
        File.WriteAllText(dir["a.txt"], "hello");
        var (code, _, err) = Run("prepare", "--input", dir["a.txt"], "--out", dir["out"], option, value);
        Assert.Equal(2, code);
        Assert.StartsWith("error: ", err);
        Assert.Contains(message, err);
        Assert.Single(err.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.False(Directory.Exists(dir["out"]));
    }

    [Fact]
    public void PreparesAFolderAndPrintsTotals()
    {
        using var dir = new TempDir();
        Directory.CreateDirectory(dir["in"]);
        for (int i = 0; i < 4; i++) File.WriteAllText(dir[$"in/{i}.txt"], $"text number {i}");
        var (code, output, _) = Run("prepare", "--input", dir["in"], "--out", dir["out"], "--tokenizer", "byte", "--val-fraction", "0.25");
        Assert.Equal(0, code);
        Assert.Contains("train       3 docs, 42 tokens", output);
        Assert.Contains("val         1 docs, 14 tokens", output);
        var meta = DatasetMeta.Load(dir["out"]);
        Assert.Equal(["train_000000.bin", "val_000000.bin"], meta.TrainShards.Concat(meta.ValShards).Select(s => s.File));
        Assert.Equal(["meta.json", "train_000000.bin", "val_000000.bin"], Directory.GetFileSystemEntries(dir["out"]).Select(Path.GetFileName).Order());
    }

    [Fact]
    public async Task ParquetPostsFilteredByWhereWithProgressLinesAndPeakRss()
    {
        using var dir = new TempDir();
        var text = new DataField<string>("text");
        var lang = new DataField<string>("lang");
        await using (var file = File.Create(dir["posts.parquet"]))
        await using (var writer = await ParquetWriter.CreateAsync(new ParquetSchema(text, lang), file))
        {
            using var group = writer.CreateRowGroup();
            await group.WriteAsync(text, new[] { "hello there", "hallo dort", "good morning", "guten morgen", "bonjour" });
            await group.WriteAsync(lang, new[] { "en", "de", "en", "de", "fr" });
        }
        var (code, output, err) = Run("prepare", "--input", dir["posts.parquet"], "--out", dir["out"], "--tokenizer", "byte", "--val-fraction", "0", "--where", "lang=en");
        Assert.True(code == 0, output + err);
        // Only the two English posts are tokenized: "hello there" + "good morning" = 23 bytes, one end-of-text token each.
        Assert.Contains("train       2 docs, 25 tokens", output);
        Assert.Equal(3, DatasetMeta.Load(dir["out"]).Pipeline!.Removed["fields:where:lang=en"].Documents);
        Assert.Matches(@"peak RSS [\d,]+ MiB", output);
        // Not a terminal: progress comes as plain lines (no carriage returns) with documents/s and tokens/s.
        Assert.Contains(err.Split('\n'), l => l.StartsWith("prepare") && l.Contains(" docs/s, ") && l.Contains(" tokens/s"));
        Assert.DoesNotContain('\r', err);
    }
}
