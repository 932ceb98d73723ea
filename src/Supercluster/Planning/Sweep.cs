namespace Supercluster.Planning;

/// <summary>One cluster size in a sweep: the best layout found there, or why there is none.</summary>
public sealed record SweepPoint(int Gpus, PlanResult? Best, string? Reason);

/// <summary>Runs the layout search at log-spaced cluster sizes (powers of two between the ends, plus both ends).</summary>
public static class Sweep
{
    /// <summary>Parses "gpus=FROM..TO" (FROM ≥ 1, TO ≥ FROM).</summary>
    public static (int From, int To) ParseRange(string text)
    {
        string bad = $"--sweep '{text}' is not a range: expected gpus=FROM..TO with 1 ≤ FROM ≤ TO, e.g. gpus=1024..100000";
        var s = text.Trim();
        if (!s.StartsWith("gpus=", StringComparison.OrdinalIgnoreCase)) throw new BadInputException(bad);
        var parts = s[5..].Split("..");
        if (parts.Length != 2 || !int.TryParse(parts[0], out int from) || !int.TryParse(parts[1], out int to) || from < 1 || to < from)
            throw new BadInputException(bad);
        return (from, to);
    }

    public static IReadOnlyList<int> Points(int from, int to)
    {
        var points = new SortedSet<int> { from, to };
        for (long p = 1; p <= to; p *= 2)
            if (p > from) points.Add((int)p);
        return points.ToList();
    }

    public static IReadOnlyList<SweepPoint> Run(PlanInputs template, int from, int to) =>
        Points(from, to).Select(n =>
        {
            var r = LayoutSearch.Search(template with { Cluster = template.Cluster with { Gpus = n } }, keep: 1);
            return new SweepPoint(n, r.Best, r.Reason);
        }).ToList();
}
