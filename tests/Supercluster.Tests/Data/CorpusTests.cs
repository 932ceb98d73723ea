using Parquet;
using Parquet.Schema;
using Supercluster.Data;

namespace Supercluster.Tests.Data;

public class CorpusTests
{
    [Fact]
    public void JsonlReadsTextDottedPathsAndMetadata()
    {
        using var dir = new TempDir();
        File.WriteAllLines(dir["a.jsonl"], ["{\"post\":{\"text\":\"hi\"},\"year\":1999,\"name\":\"x\",\"ok\":true}", "", "{\"post\":{\"text\":\"there\"}}"]);
        var docs = CorpusReader.Read([dir["a.jsonl"]], CorpusFormat.Auto, "post.text").ToList();
        Assert.Equal(["hi", "there"], docs.Select(d => d.Text));
        Assert.Equal("1999", docs[0].Metadata!["year"]);
        Assert.Equal("x", docs[0].Metadata!["name"]);
        Assert.Equal("true", docs[0].Metadata!["ok"]);
        Assert.Null(docs[1].Metadata);
    }

    [Fact]
    public void MalformedJsonlNamesFileAndLine()
    {
        using var dir = new TempDir();
        File.WriteAllLines(dir["bad.jsonl"], ["{\"text\":\"a\"}", "{\"text\":\"b\"}", "{\"text\": oops}"]);
        var e = Assert.Throws<BadInputException>(() => CorpusReader.Read([dir.Path]).ToList());
        Assert.StartsWith($"{dir["bad.jsonl"]}:3: malformed JSON", e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void MissingTextFieldNamesFileLineAndField()
    {
        using var dir = new TempDir();
        File.WriteAllLines(dir["m.jsonl"], ["{\"text\":\"a\"}", "{\"body\":\"b\"}"]);
        var e = Assert.Throws<BadInputException>(() => CorpusReader.Read([dir["m.jsonl"]]).ToList());
        Assert.Contains($"{dir["m.jsonl"]}:2: no text field 'text' (fields: body)", e.Message);
        File.WriteAllLines(dir["n.jsonl"], ["{\"text\":5}"]);
        Assert.Contains("n.jsonl:1: field 'text' is number", Assert.Throws<BadInputException>(() => CorpusReader.Read([dir["n.jsonl"]]).ToList()).Message);
    }

    [Fact]
    public void MissingPathAndUnknownFormatAreBadInput()
    {
        using var dir = new TempDir();
        Assert.Contains($"input {dir["nope"]} does not exist", Assert.Throws<BadInputException>(() => CorpusReader.Read([dir["nope"]])).Message);
        File.WriteAllText(dir["x.csv"], "a,b");
        Assert.Contains("x.csv: cannot tell the format", Assert.Throws<BadInputException>(() => CorpusReader.Read([dir["x.csv"]])).Message);
        Assert.Contains("unknown format 'xml'", Assert.Throws<BadInputException>(() => CorpusReader.ParseFormat("xml")).Message);
        Assert.Equal(CorpusFormat.Parquet, CorpusReader.ParseFormat("PARQUET"));
    }

    [Fact]
    public void FoldersAreReadRecursivelyInSortedOrder()
    {
        using var dir = new TempDir();
        Directory.CreateDirectory(dir["b"]);
        File.WriteAllText(dir["b/2.txt"], "two");
        File.WriteAllText(dir["b/1.md"], "one");
        File.WriteAllText(dir["a.txt"], "zero");
        File.WriteAllText(dir["skip.bin"], "ignored in auto mode");
        Assert.Equal(["zero", "one", "two"], CorpusReader.Read([dir.Path]).Select(d => d.Text));
        Assert.Equal(4, CorpusReader.Read([dir.Path], CorpusFormat.Txt).Count());
    }

    [Fact]
    public async Task ParquetRowsStreamWithMetadata()
    {
        using var dir = new TempDir();
        var text = new DataField<string>("text");
        var year = new DataField<int>("year");
        var schema = new ParquetSchema(text, year);
        await using (var file = File.Create(dir["c.parquet"]))
        await using (var writer = await ParquetWriter.CreateAsync(schema, file))
        {
            foreach (var (texts, years) in new[] { (new[] { "alpha", "beta" }, new[] { 1790, 1791 }), (new[] { "gamma" }, new[] { 1792 }) })
            {
                using var group = writer.CreateRowGroup(); // two row groups: read one at a time
                await group.WriteAsync(text, texts);
                await group.WriteAsync<int>(year, years.AsMemory());
            }
        }
        var docs = CorpusReader.Read([dir.Path]).ToList();
        Assert.Equal(["alpha", "beta", "gamma"], docs.Select(d => d.Text));
        Assert.Equal("1792", docs[2].Metadata!["year"]);
        var e = Assert.Throws<BadInputException>(() => CorpusReader.Read([dir["c.parquet"]], CorpusFormat.Auto, "body").ToList());
        Assert.Contains("no text column 'body' (columns: text, year)", e.Message);
        File.WriteAllText(dir["fake.parquet"], "not parquet");
        Assert.Contains("fake.parquet is not a readable parquet file", Assert.Throws<BadInputException>(() => CorpusReader.Read([dir["fake.parquet"]]).ToList()).Message);
    }
}
