using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;
using Lucene.Net.Index;
using Lucene.Net.Search;

namespace Supercluster.Search;

/// <summary>How a field's values are indexed for filters: exact text, or also as a number or an instant for ranges.</summary>
public enum FieldKind { Keyword, Number, Date }

/// <summary>
/// One field's condition: equal to any of <see cref="Values"/>, and/or inside a range (bounds parsed as the field's kind).
/// Conditions on different fields must all hold.
/// </summary>
public sealed record FieldFilter(string Field, IReadOnlyList<string> Values, string? Gte = null, string? Gt = null, string? Lte = null, string? Lt = null)
{
    public bool IsRange => Gte is not null || Gt is not null || Lte is not null || Lt is not null;
}

/// <summary>Field filters from the CLI (<c>author=alice</c>, <c>created_at&gt;=2021-01-01</c>, <c>year=1990..1999</c>) or JSON.</summary>
public static partial class SearchFilters
{
    [GeneratedRegex(@"^\s*([^=<>!\s]+)\s*(>=|<=|=|>|<)\s*(.*?)\s*$")]
    private static partial Regex Condition();

    /// <summary>
    /// <c>FIELD=VALUE</c> (several on one field: any of them), <c>FIELD=LOW..HIGH</c> (inclusive; either side may be
    /// empty), <c>FIELD&gt;=V</c>, <c>&gt;</c>, <c>&lt;=</c>, <c>&lt;</c>.
    /// </summary>
    public static IReadOnlyList<FieldFilter> ParseCli(IEnumerable<string> conditions)
    {
        var byField = new Dictionary<string, FieldFilter>(StringComparer.Ordinal);
        foreach (var c in conditions)
        {
            var m = Condition().Match(c);
            if (!m.Success || m.Groups[3].Value.Length == 0)
                throw new BadInputException($"--filter '{c}': expected FIELD=VALUE, FIELD=LOW..HIGH, or FIELD>=VALUE (also >, <=, <)");
            var (field, op, value) = (m.Groups[1].Value, m.Groups[2].Value, m.Groups[3].Value);
            var f = byField.GetValueOrDefault(field) ?? new FieldFilter(field, []);
            f = op switch
            {
                "=" when value.Contains("..") => Between(f, value, c),
                "=" => f with { Values = [.. f.Values, value] },
                ">=" => f with { Gte = value },
                ">" => f with { Gt = value },
                "<=" => f with { Lte = value },
                _ => f with { Lt = value },
            };
            byField[field] = f;
        }
        return byField.Values.ToList();
    }

    static FieldFilter Between(FieldFilter f, string value, string condition)
    {
        var parts = value.Split("..");
        if (parts.Length != 2 || parts.All(p => p.Trim().Length == 0))
            throw new BadInputException($"--filter '{condition}': malformed range '{value}', expected LOW..HIGH (one side may be empty)");
        return f with { Gte = parts[0].Trim() is { Length: > 0 } lo ? lo : f.Gte, Lte = parts[1].Trim() is { Length: > 0 } hi ? hi : f.Lte };
    }

    /// <summary>
    /// <c>{"author": "alice", "lang": ["en", "de"], "created_at": {"gte": "2021-01-01", "lt": "2022-01-01"}}</c>.
    /// Error messages name the field as <c>filters.FIELD</c>.
    /// </summary>
    public static IReadOnlyList<FieldFilter> ParseJson(JsonElement filters)
    {
        if (filters.ValueKind != JsonValueKind.Object) throw new BadInputException("'filters' must be an object of FIELD: value, [values] or {gte, gt, lte, lt}");
        var list = new List<FieldFilter>();
        foreach (var p in filters.EnumerateObject())
        {
            string Scalar(JsonElement e, string where) => e.ValueKind switch
            {
                JsonValueKind.String => e.GetString()!,
                JsonValueKind.Number => e.GetRawText(),
                _ => throw new BadInputException($"filters.{where}: expected a string or a number, found {e.ValueKind.ToString().ToLowerInvariant()}"),
            };
            var v = p.Value;
            switch (v.ValueKind)
            {
                case JsonValueKind.String or JsonValueKind.Number:
                    list.Add(new FieldFilter(p.Name, [Scalar(v, p.Name)]));
                    break;
                case JsonValueKind.Array when v.GetArrayLength() > 0:
                    list.Add(new FieldFilter(p.Name, v.EnumerateArray().Select(e => Scalar(e, p.Name)).ToList()));
                    break;
                case JsonValueKind.Object:
                    var f = new FieldFilter(p.Name, []);
                    foreach (var b in v.EnumerateObject())
                    {
                        var s = Scalar(b.Value, $"{p.Name}.{b.Name}");
                        f = b.Name switch
                        {
                            "gte" => f with { Gte = s }, "gt" => f with { Gt = s }, "lte" => f with { Lte = s }, "lt" => f with { Lt = s },
                            _ => throw new BadInputException($"filters.{p.Name}: unknown bound '{b.Name}', expected gte, gt, lte or lt"),
                        };
                    }
                    if (!f.IsRange) throw new BadInputException($"filters.{p.Name}: empty range, expected some of gte, gt, lte, lt");
                    list.Add(f);
                    break;
                default:
                    throw new BadInputException($"filters.{p.Name}: expected a value, a non-empty array of values, or a range {{gte, gt, lte, lt}}");
            }
        }
        return list;
    }

    /// <summary>The Lucene query all filters make together (null for none); checks fields and bounds against the schema.</summary>
    public static Query? ToQuery(IReadOnlyList<FieldFilter> filters, IReadOnlyDictionary<string, FieldKind> schema)
    {
        if (filters.Count == 0) return null;
        var all = new BooleanQuery();
        foreach (var f in filters)
        {
            if (!schema.TryGetValue(f.Field, out var kind))
                throw new BadInputException($"unknown filter field '{f.Field}'; the index has: {(schema.Count == 0 ? "no fields" : string.Join(", ", schema.Keys.Order()))}");
            if (f.Values.Count > 0)
            {
                var any = new BooleanQuery();
                foreach (var v in f.Values) any.Add(new TermQuery(new Term(KeywordIndex.FieldPrefix + f.Field, v)), Occur.SHOULD);
                all.Add(any, Occur.MUST);
            }
            if (!f.IsRange) continue;
            if (kind == FieldKind.Keyword)
                throw new BadInputException($"filter on '{f.Field}': a range needs a number or date field, '{f.Field}' holds text");
            string name = KeywordIndex.RangePrefix + f.Field;
            if (kind == FieldKind.Date)
            {
                long? lo = Max(Bound(f, f.Gte, kind), Bound(f, f.Gt, kind) + 1), hi = Min(Bound(f, f.Lte, kind), Bound(f, f.Lt, kind) - 1);
                all.Add(NumericRangeQuery.NewInt64Range(name, lo, hi, true, true), Occur.MUST);
            }
            else
            {
                double? gte = Num(f, f.Gte), gt = Num(f, f.Gt), lte = Num(f, f.Lte), lt = Num(f, f.Lt);
                if (gte is not null) all.Add(NumericRangeQuery.NewDoubleRange(name, gte, null, true, true), Occur.MUST);
                if (gt is not null) all.Add(NumericRangeQuery.NewDoubleRange(name, gt, null, false, true), Occur.MUST);
                if (lte is not null) all.Add(NumericRangeQuery.NewDoubleRange(name, null, lte, true, true), Occur.MUST);
                if (lt is not null) all.Add(NumericRangeQuery.NewDoubleRange(name, null, lt, true, false), Occur.MUST);
            }
        }
        return all;
    }

    static long? Max(long? a, long? b) => a is null ? b : b is null ? a : Math.Max(a.Value, b.Value);
    static long? Min(long? a, long? b) => a is null ? b : b is null ? a : Math.Min(a.Value, b.Value);

    static long? Bound(FieldFilter f, string? value, FieldKind kind) =>
        value is null ? null : FieldValues.TryDate(value, out var ms) ? ms
            : throw new BadInputException($"filter on '{f.Field}': '{value}' is not a date; expected ISO 8601 such as 2021, 2021-03, 2021-03-01 or 2021-03-01T12:00:00Z");

    static double? Num(FieldFilter f, string? value) =>
        value is null ? null : FieldValues.TryNumber(value, out var d) ? d
            : throw new BadInputException($"filter on '{f.Field}': '{value}' is not a number");
}

/// <summary>Reading field values as numbers and instants (UTC milliseconds) — one place for both build and query.</summary>
public static partial class FieldValues
{
    [GeneratedRegex(@"^\d{4}(-\d{2}(-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?)?)?$")]
    private static partial Regex IsoDate();

    public static bool TryNumber(string s, out double value) =>
        double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out value) && double.IsFinite(value);

    /// <summary>ISO 8601 dates: <c>2021</c>, <c>2021-03</c>, <c>2021-03-01</c>, with an optional time and offset (UTC when none).</summary>
    public static bool TryDate(string s, out long unixMs)
    {
        unixMs = 0;
        s = s.Trim();
        if (!IsoDate().IsMatch(s)) return false;
        if (s.Length == 4) s += "-01-01";
        else if (s.Length == 7) s += "-01";
        if (!DateTimeOffset.TryParse(s, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal | DateTimeStyles.AdjustToUniversal, out var t)) return false;
        unixMs = t.ToUnixTimeMilliseconds();
        return true;
    }

    /// <summary>The kind a field gets from its first value: a date needs a month (a bare year is a number).</summary>
    public static FieldKind KindOf(string value) =>
        value.Length > 4 && TryDate(value, out _) ? FieldKind.Date : TryNumber(value, out _) ? FieldKind.Number : FieldKind.Keyword;
}
