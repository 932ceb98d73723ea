using System.Diagnostics;
using System.Text;
using System.Text.Json;
using Supercluster.Distributed;

namespace Supercluster.Tests.Data;

/// <summary><c>prepare</c> under a real mpirun: shards independent of the rank count, interrupted runs leave nothing that looks complete.</summary>
public class MultiRankPrepareTests
{
    static Process Start(int ranks, IEnumerable<string> args)
    {
        string[] full = [.. JobSupervisor.MpirunArgs(ranks), "dotnet", Path.Combine(AppContext.BaseDirectory, "Supercluster.Cli.dll"), "prepare", .. args];
        var psi = new ProcessStartInfo(JobSupervisor.FindMpirun()) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in full) psi.ArgumentList.Add(a);
        return Process.Start(psi)!;
    }

    static (int Code, string Out, string Err) Mpirun(int ranks, params string[] args)
    {
        using var p = Start(ranks, args);
        var o = p.StandardOutput.ReadToEndAsync();
        var e = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(TimeSpan.FromMinutes(3))) { p.Kill(true); throw new TimeoutException("mpirun ran over 3 minutes"); }
        p.WaitForExit();
        return (p.ExitCode, o.Result, e.Result);
    }

    /// <summary>Two JSONL files and a txt file, with exact and near duplicates across the file and rank boundaries.</summary>
    static void WriteCorpus(TempDir dir)
    {
        var (texts, _) = DedupTests.PlantedCorpus(new Random(11), bases: 250, exactRate: 0.15, nearRate: 0.15);
        Directory.CreateDirectory(dir["in"]);
        using (var a = new StreamWriter(dir["in/a.jsonl"], false, new UTF8Encoding(false)))
            for (int i = 0; i < texts.Count / 2; i++) a.WriteLine(JsonSerializer.Serialize(new { text = texts[i], lang = i % 5 == 0 ? "de" : "en" }));
        File.WriteAllText(dir["in/b.txt"], texts[3]); // a duplicate as its own file
        using var c = new StreamWriter(dir["in/c.jsonl"], false, new UTF8Encoding(false));
        for (int i = texts.Count / 2; i < texts.Count; i++) c.WriteLine(JsonSerializer.Serialize(new { text = texts[i] + " Mail x.y@example.org", lang = "en" }));
    }

    [Fact]
    public void ShardsAreByteIdenticalForOneTwoAndThreeRanks()
    {
        using var dir = new TempDir();
        WriteCorpus(dir);
        var outputs = new List<Dictionary<string, byte[]>>();
        foreach (int ranks in new[] { 1, 2, 3 })
        {
            var (code, stdout, err) = Mpirun(ranks, "--input", dir["in"], "--out", dir[$"o{ranks}"], "--tokenizer", "byte", "--dedup", "near",
                "--scrub-pii", "--where", "lang!=de", "--shard-tokens", "150000", "--val-fraction", "0.1", "--chunk-chars", "50000",
                "--dedup-report", dir[$"clusters{ranks}.jsonl"]);
            Assert.True(code == 0, $"{ranks} ranks: exit {code}\n{err}");
            Assert.Contains($"on {ranks} rank(s)", stdout);
            Assert.Contains("peak RSS", stdout);
            outputs.Add(Directory.GetFiles(dir[$"o{ranks}"]).ToDictionary(f => Path.GetFileName(f), File.ReadAllBytes));
        }
        Assert.True(outputs[0].Count >= 4, string.Join(", ", outputs[0].Keys)); // several train shards, val, meta.json
        var meta = JsonDocument.Parse(outputs[0]["meta.json"]).RootElement.GetProperty("pipeline");
        Assert.True(meta.GetProperty("removed").GetProperty("dedup_exact").GetProperty("documents").GetInt64() > 0);
        Assert.True(meta.GetProperty("removed").GetProperty("dedup_near").GetProperty("documents").GetInt64() > 0);
        Assert.True(meta.GetProperty("pii_replaced").GetProperty("email").GetInt64() > 0);
        // --dedup-report: the removed ids of its clusters are exactly what meta.json counts, and the same for every rank count.
        var clusters = File.ReadAllLines(dir["clusters1.jsonl"]).Select(l => JsonDocument.Parse(l).RootElement).ToList();
        foreach (var stage in new[] { "dedup_exact", "dedup_near" })
            Assert.Equal(meta.GetProperty("removed").GetProperty(stage).GetProperty("documents").GetInt64(),
                clusters.Where(c => "dedup_" + c.GetProperty("stage").GetString() == stage).Sum(c => c.GetProperty("removed").GetArrayLength()));
        foreach (int ranks in new[] { 2, 3 })
            Assert.Equal(File.ReadAllBytes(dir["clusters1.jsonl"]), File.ReadAllBytes(dir[$"clusters{ranks}.jsonl"]));
        foreach (var other in outputs.Skip(1))
        {
            Assert.Equal(outputs[0].Keys.Order(), other.Keys.Order());
            foreach (var (name, bytes) in outputs[0]) Assert.True(bytes.AsSpan().SequenceEqual(other[name]), $"{name} differs");
        }
    }

    [Fact]
    public void InterruptedRunLeavesNoShardThatLooksComplete()
    {
        using var dir = new TempDir();
        Directory.CreateDirectory(dir["in"]);
        var rng = new Random(3);
        using (var w = new StreamWriter(dir["in/big.jsonl"]))
            for (int i = 0; i < 30_000; i++) w.WriteLine(JsonSerializer.Serialize(new { text = $"post {i} " + string.Join(' ', Enumerable.Range(0, 40).Select(_ => rng.Next(1000))) }));
        using var p = Start(2, ["--input", dir["in"], "--out", dir["out"], "--tokenizer", "gpt2", "--dedup", "near", "--chunk-chars", "100000"]);
        _ = p.StandardOutput.ReadToEndAsync();
        _ = p.StandardError.ReadToEndAsync();
        var deadline = DateTime.UtcNow.AddMinutes(2);
        while (!(Directory.Exists(dir["out"]) && Directory.GetFiles(dir["out"], "rank-1.tok", SearchOption.AllDirectories).Any(f => new FileInfo(f).Length > 0)))
        {
            Assert.True(DateTime.UtcNow < deadline && !p.HasExited, "prepare did not start spilling");
            Thread.Sleep(50);
        }
        p.Kill(entireProcessTree: true); // SIGKILL to mpirun and both ranks mid-run
        p.WaitForExit();
        Assert.False(File.Exists(dir["out/meta.json"]));
        Assert.Empty(Directory.GetFiles(dir["out"], "*.bin"));
        Assert.Throws<BadInputException>(() => new Supercluster.Data.TokenDataLoader(dir["out"], "train", 1, 8));
    }
}
