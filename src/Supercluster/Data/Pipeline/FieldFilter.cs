using System.Globalization;

namespace Supercluster.Data.Pipeline;

/// <summary>
/// Keeps records by their metadata fields (JSONL keys, Parquet columns): <c>--where lang=en</c> (equal, ordinal),
/// <c>--where lang!=en</c>, <c>--min-field likes=10</c> and <c>--max-field likes=1000</c> (numeric, inclusive). All
/// conditions must hold; a record without the field, or with a non-numeric value for a numeric bound, is removed.
/// </summary>
public sealed class FieldFilter
{
    readonly List<(string Rule, string Field, Func<string, bool> Test)> _conditions = [];

    public FieldFilter(IEnumerable<string>? where, IEnumerable<string>? min, IEnumerable<string>? max)
    {
        foreach (var w in where ?? [])
        {
            int ne = w.IndexOf("!=", StringComparison.Ordinal), eq = w.IndexOf('=');
            if (ne > 0) { var v = w[(ne + 2)..]; _conditions.Add(($"where:{w}", w[..ne], s => s != v)); }
            else if (eq > 0) { var v = w[(eq + 1)..]; _conditions.Add(($"where:{w}", w[..eq], s => s == v)); }
            else throw new BadInputException($"--where '{w}': expected FIELD=VALUE or FIELD!=VALUE");
        }
        foreach (var (list, flag, keep) in new[] { (min, "--min-field", (Func<double, double, bool>)((x, b) => x >= b)), (max, "--max-field", (x, b) => x <= b) })
            foreach (var m in list ?? [])
            {
                int eq = m.IndexOf('=');
                if (eq <= 0 || !double.TryParse(m[(eq + 1)..], NumberStyles.Float, CultureInfo.InvariantCulture, out var bound))
                    throw new BadInputException($"{flag} '{m}': expected FIELD=NUMBER");
                _conditions.Add(($"{flag[2..]}:{m}", m[..eq],
                    s => double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out var x) && keep(x, bound)));
            }
    }

    public bool IsEmpty => _conditions.Count == 0;

    /// <summary>The first condition <paramref name="doc"/> fails (its rule name), or null when it passes all.</summary>
    public string? Check(Document doc)
    {
        foreach (var (rule, field, test) in _conditions)
            if (doc.Metadata is null || !doc.Metadata.TryGetValue(field, out var value) || !test(value)) return rule;
        return null;
    }
}
