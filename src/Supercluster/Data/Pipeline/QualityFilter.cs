using System.Globalization;

namespace Supercluster.Data.Pipeline;

/// <summary>
/// Heuristic document quality rules in the style of Gopher (Rae et al. 2021, appendix A), C4 (Raffel et al. 2020) and
/// FineWeb (Penedo et al. 2024). A document is removed by the first rule it fails, in <see cref="Rules"/> order, and
/// counted under that rule. Words are white-space separated; lines are split on '\n'. Thresholds are options
/// (<c>--filter-threshold NAME=VALUE</c>); a rule is disabled by a value that can never fail (e.g. 0 for a minimum).
/// </summary>
public sealed class QualityFilter
{
    /// <summary>Name, default threshold, and what it bounds. One source for the rules, their docs and the CLI help.</summary>
    public static readonly (string Name, double Default, string Meaning)[] Rules =
    [
        ("min_words", 50, "fewer words than this (Gopher)"),
        ("max_words", 100_000, "more words than this (Gopher)"),
        ("min_mean_word_length", 3, "mean word length in characters below this (Gopher)"),
        ("max_mean_word_length", 10, "mean word length above this (Gopher)"),
        ("max_symbol_word_ratio", 0.1, "('#' + '...'/'…') per word above this (Gopher)"),
        ("max_bullet_lines", 0.9, "share of lines starting with a bullet above this (Gopher)"),
        ("max_ellipsis_lines", 0.3, "share of lines ending in '...'/'…' above this (Gopher)"),
        ("min_punct_lines", 0.12, "share of lines ending in terminal punctuation below this (FineWeb)"),
        ("min_alpha_words", 0.8, "share of words with a letter below this (Gopher)"),
        ("min_stop_words", 2, "fewer of the, be, to, of, and, that, have, with (Gopher; English)"),
        ("max_dup_lines", 0.3, "share of lines that repeat an earlier line above this (Gopher)"),
        ("max_dup_line_chars", 0.2, "share of characters in repeated lines above this (Gopher)"),
        ("max_top_2gram", 0.20, "characters of the most frequent word 2-gram / all word characters above this (Gopher)"),
        ("max_top_3gram", 0.18, "same for 3-grams (Gopher)"),
        ("max_top_4gram", 0.16, "same for 4-grams (Gopher)"),
        ("max_dup_5gram", 0.15, "characters of words inside repeated 5-grams / all word characters above this (Gopher)"),
        ("max_dup_6gram", 0.14, "same for 6-grams (Gopher)"),
        ("max_dup_7gram", 0.13, "same for 7-grams (Gopher)"),
        ("max_dup_8gram", 0.12, "same for 8-grams (Gopher)"),
        ("max_dup_9gram", 0.11, "same for 9-grams (Gopher)"),
        ("max_dup_10gram", 0.10, "same for 10-grams (Gopher)"),
        ("lorem_ipsum", 1, "1: remove text containing 'lorem ipsum' (C4); 0: off"),
        ("curly_brace", 1, "1: remove text containing '{' — code and templates (C4); 0: off"),
    ];

    static readonly HashSet<string> StopWords = ["the", "be", "to", "of", "and", "that", "have", "with"];
    static readonly char[] Bullets = ['•', '‣', '⁃', '◦', '-', '*', '–', '—'];
    static readonly char[] TerminalPunct = ['.', '!', '?', '"', '\'', '”', '’', ')', '…', '。', '！', '？'];

    readonly double[] _t;

    /// <summary>Defaults, overridden by <c>NAME=VALUE</c> pairs.</summary>
    public QualityFilter(IEnumerable<string>? overrides = null)
    {
        _t = Rules.Select(r => r.Default).ToArray();
        foreach (var o in overrides ?? [])
        {
            var eq = o.IndexOf('=');
            int i = eq < 0 ? -1 : Array.FindIndex(Rules, r => r.Name == o[..eq].Trim());
            if (i < 0) throw new BadInputException($"--filter-threshold '{o}': expected NAME=VALUE with NAME one of {string.Join(", ", Rules.Select(r => r.Name))}");
            if (!double.TryParse(o[(eq + 1)..], NumberStyles.Float, CultureInfo.InvariantCulture, out var v) || !double.IsFinite(v) || v < 0)
                throw new BadInputException($"--filter-threshold '{o}': value must be a non-negative number");
            _t[i] = v;
        }
    }

    public double this[string name] => _t[Array.FindIndex(Rules, r => r.Name == name)];

    /// <summary>The first rule <paramref name="text"/> fails, or null when it passes all.</summary>
    public string? Check(string text)
    {
        var words = text.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
        var lines = text.Split('\n').Select(l => l.Trim()).Where(l => l.Length > 0).ToArray();
        int n = words.Length;
        double wordChars = words.Sum(w => (double)w.Length);
        double meanLen = n == 0 ? 0 : wordChars / n;
        int hashes = 0, ellipses = 0;
        foreach (var w in words) { hashes += w.Count(c => c == '#'); ellipses += Count(w, "...") + w.Count(c => c == '…'); }

        int k = 0;
        bool Fails(bool failed) { k++; return failed; }
        string Name() => Rules[k - 1].Name;

        if (Fails(n < _t[0])) return Name();
        if (Fails(n > _t[1])) return Name();
        if (Fails(meanLen < _t[2])) return Name();
        if (Fails(meanLen > _t[3])) return Name();
        if (Fails(n > 0 && (hashes + ellipses) / (double)n > _t[4])) return Name();
        if (Fails(lines.Length > 0 && lines.Count(l => Bullets.Contains(l[0])) / (double)lines.Length > _t[5])) return Name();
        if (Fails(lines.Length > 0 && lines.Count(l => l.EndsWith("...") || l.EndsWith('…')) / (double)lines.Length > _t[6])) return Name();
        if (Fails(lines.Length > 0 && lines.Count(l => TerminalPunct.Contains(l[^1])) / (double)lines.Length < _t[7])) return Name();
        if (Fails(n > 0 && words.Count(w => w.Any(char.IsLetter)) / (double)n < _t[8])) return Name();
        if (Fails(words.Select(w => w.ToLowerInvariant().Trim('.', ',', '!', '?', ';', ':', '"', '\'')).Where(StopWords.Contains).Count() < _t[9])) return Name();
        var (dupLines, dupLineChars) = DuplicateLines(lines);
        if (Fails(lines.Length > 0 && dupLines / (double)lines.Length > _t[10])) return Name();
        if (Fails(dupLineChars > _t[11])) return Name();
        for (int g = 2; g <= 4; g++)
            if (Fails(wordChars > 0 && TopNgramChars(words, g) / wordChars > _t[12 + g - 2])) return Name();
        for (int g = 5; g <= 10; g++)
            if (Fails(wordChars > 0 && DuplicateNgramChars(words, g) / wordChars > _t[15 + g - 5])) return Name();
        if (Fails(_t[21] > 0 && text.Contains("lorem ipsum", StringComparison.OrdinalIgnoreCase))) return Name();
        if (Fails(_t[22] > 0 && text.Contains('{'))) return Name();
        return null;
    }

    static int Count(string s, string sub)
    {
        int c = 0;
        for (int i = s.IndexOf(sub, StringComparison.Ordinal); i >= 0; i = s.IndexOf(sub, i + sub.Length, StringComparison.Ordinal)) c++;
        return c;
    }

    /// <summary>(lines equal to an earlier line, characters of those lines / characters of all lines).</summary>
    static (int Lines, double CharShare) DuplicateLines(string[] lines)
    {
        var seen = new HashSet<string>();
        int dup = 0;
        double dupChars = 0, all = 0;
        foreach (var l in lines)
        {
            all += l.Length;
            if (!seen.Add(l)) { dup++; dupChars += l.Length; }
        }
        return (dup, all == 0 ? 0 : dupChars / all);
    }

    /// <summary>Characters (without separators) of the most frequent word n-gram times its count.</summary>
    static double TopNgramChars(string[] words, int n)
    {
        if (words.Length < n) return 0;
        var counts = new Dictionary<string, int>();
        string? top = null;
        int best = 0;
        for (int i = 0; i + n <= words.Length; i++)
        {
            var g = string.Join(' ', words, i, n);
            int c = counts[g] = counts.GetValueOrDefault(g) + 1;
            if (c > best) (best, top) = (c, g);
        }
        return best < 2 ? 0 : (double)(top!.Length - (n - 1)) * best;
    }

    /// <summary>Characters of the words covered by any n-gram that occurs more than once (each word counted once).</summary>
    static double DuplicateNgramChars(string[] words, int n)
    {
        if (words.Length < n) return 0;
        var seen = new HashSet<string>();
        var covered = new bool[words.Length];
        for (int i = 0; i + n <= words.Length; i++)
        {
            if (seen.Add(string.Join(' ', words, i, n))) continue;
            for (int j = i; j < i + n; j++) covered[j] = true;
        }
        double chars = 0;
        for (int i = 0; i < words.Length; i++) if (covered[i]) chars += words[i].Length;
        return chars;
    }
}
