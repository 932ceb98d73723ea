using Supercluster.Planning;

namespace Supercluster.Tests.Planning;

/// <summary>
/// bench/gemm-shapes.py times the GEMMs of every published row at that row's per-GPU shapes (docs/planning.md, "What would
/// close the gap"). Its row table is a copy of <see cref="PublishedRuns"/>'s GEMM-relevant inputs (Python cannot read the C#);
/// these tests keep the copy honest, so the measurement it prints is of the shapes the planner actually prices.
/// </summary>
public class GemmShapeBenchTests
{
    /// <summary>What fixes a row's per-GPU GEMM shapes: GPU family, precision, model widths, TP, CP, micro-batch, sequence.</summary>
    sealed record Shapes(string Gpu, string Precision, int Hidden, int Heads, int KvHeads, int Ffn, bool Gated, int Vocab,
        int Tp, int Cp, int MicroBatch, int Seq);

    static Shapes Of(PublishedRun r)
    {
        var (m, run, l) = (r.Inputs.Model, r.Inputs.Run, r.Inputs.Layout);
        string gpu = r.Inputs.Cluster.Gpu.Name.StartsWith("A100") ? "A100" : r.Inputs.Cluster.Gpu.Name.StartsWith("H100") ? "H100" : r.Inputs.Cluster.Gpu.Name;
        string precision = run.Precision == Precision.Fp16 ? "fp16" : "bf16";
        return new(gpu, precision, m.Hidden, m.Heads, m.KvHeads, m.Ffn, m.GatedFfn, m.Vocab, l.Tp, l.Cp, l.MicroBatch, run.SeqLen);
    }

    static List<(string Name, Shapes Shapes)> ScriptRows()
    {
        string path = ScriptPath();
        string text = File.ReadAllText(path);
        int start = text.IndexOf("ROWS = \"\"\"", StringComparison.Ordinal);
        Assert.True(start >= 0, $"{path}: no ROWS table");
        start = text.IndexOf('\n', start) + 1;
        int end = text.IndexOf("\"\"\"", start, StringComparison.Ordinal);
        return text[start..end].Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(line =>
        {
            var f = line.Split('|').Select(x => x.Trim()).ToArray();
            Assert.Equal(13, f.Length);
            int I(int i) => int.Parse(f[i]);
            return (f[0], new Shapes(f[1], f[2], I(3), I(4), I(5), I(6), f[7] == "1", I(8), I(9), I(10), I(11), I(12)));
        }).ToList();
    }

    static string ScriptPath()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            string p = Path.Combine(dir.FullName, "bench", "gemm-shapes.py");
            if (File.Exists(p)) return p;
        }
        throw new FileNotFoundException($"bench/gemm-shapes.py not found above {AppContext.BaseDirectory}");
    }

    [Fact]
    public void EveryPublishedRowsShapesAreInTheBenchScript()
    {
        var listed = ScriptRows().Select(r => r.Shapes).ToHashSet();
        var missing = PublishedRuns.All.Where(r => !listed.Contains(Of(r))).Select(r => r.Name).ToList();
        Assert.True(missing.Count == 0, "bench/gemm-shapes.py lacks the GEMM shapes of: " + string.Join(", ", missing));
    }

    [Fact]
    public void EveryBenchScriptRowIsAPublishedRow()
    {
        // Each script row is named after a published row whose shapes it carries (a row shared by several GPU counts is
        // listed once under its first name), so nothing is timed that the planner does not price.
        foreach (var (name, shapes) in ScriptRows())
        {
            var run = PublishedRuns.All.FirstOrDefault(r => r.Name.StartsWith(name, StringComparison.Ordinal));
            Assert.True(run is not null, $"bench/gemm-shapes.py row '{name}' names no published run");
            Assert.Equal(Of(run!), shapes);
        }
    }

    [Fact]
    public void ScriptPricesGemmsWithTheCataloguesLayerShareAndMamf()
    {
        // The planner column must be ComputeModel's rate, so the script's defaults are the catalogue's constants.
        string text = File.ReadAllText(ScriptPath());
        string a100 = GpuCatalog.Get("A100-80GB").LayerShapeGemmShare.ToString(System.Globalization.CultureInfo.InvariantCulture);
        string h100 = GpuCatalog.Get("H100-SXM").LayerShapeGemmShare.ToString(System.Globalization.CultureInfo.InvariantCulture);
        Assert.Contains($"{{\"A100\": {a100}, \"H100\": {h100}}}[args.gpu]", text);
        Assert.Contains("default=267.9", text); // A100 SXM MAMF: GemmEfficiency 0.859 × 312
        Assert.Equal(267.9 / 312, GpuCatalog.Get("A100-80GB").GemmEfficiency, 3);
    }
}
