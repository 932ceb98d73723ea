using System.Text;
using Supercluster.Data;

namespace Supercluster.Tests.Data;

/// <summary>Byte-range input split: ranks in order read exactly what one process reads, for any rank count.</summary>
public class InputSplitTests
{
    [Fact]
    public void RanksTogetherReadTheSequenceOfOneProcess()
    {
        using var dir = new TempDir();
        Directory.CreateDirectory(dir["in"]);
        var rng = new Random(9);
        // BOM, CRLF line ends, blank lines, multi-byte characters and lines of very different lengths.
        var sb = new StringBuilder("\uFEFF");
        for (int i = 0; i < 200; i++)
            sb.Append($"{{\"text\":\"{i} {new string('é', rng.Next(0, 300))}\"}}").Append(i % 7 == 0 ? "\r\n\r\n" : "\n");
        File.WriteAllText(dir["in/a.jsonl"], sb.ToString(), new UTF8Encoding(false));
        File.WriteAllText(dir["in/b.txt"], "a whole file");
        File.WriteAllText(dir["in/c.jsonl"], "{\"text\":\"last\"}"); // no final newline
        var files = CorpusReader.ListFiles([dir["in"]], CorpusFormat.Auto);
        var all = CorpusReader.ReadPart(files, "text", 0, 1).Select(d => d.Text).ToList();
        Assert.Equal(202, all.Count);
        Assert.StartsWith("0 ", all[0]);
        for (int world = 2; world <= 7; world++)
        {
            var parts = Enumerable.Range(0, world).SelectMany(r => CorpusReader.ReadPart(files, "text", r, world)).Select(d => d.Text).ToList();
            Assert.Equal(all, parts);
        }
        // A malformed line is named by line number from the file start, by byte offset from a rank in the middle.
        File.AppendAllText(dir["in/c.jsonl"], "\n{oops\n");
        files = CorpusReader.ListFiles([dir["in/c.jsonl"]], CorpusFormat.Auto);
        Assert.Contains("c.jsonl:2: malformed JSON", Assert.Throws<BadInputException>(() => CorpusReader.ReadPart(files, "text", 0, 1).ToList()).Message);
        Assert.Contains("c.jsonl:byte 16: malformed JSON", Assert.Throws<BadInputException>(() => CorpusReader.ReadPart(files, "text", 1, 2).ToList()).Message);
    }
}
