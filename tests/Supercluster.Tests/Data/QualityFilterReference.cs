using Supercluster.Data.Pipeline;

namespace Supercluster.Tests.Data;

/// <summary>
/// The quality filter as it was before the rules were fused into one pass (commit 32577b3, one pass per rule, string
/// n-grams): the reference <see cref="QualityFilter"/> must agree with, decision and measured value of every rule.
/// </summary>
sealed class QualityFilterReference
{
    static readonly HashSet<string> StopWords = ["the", "be", "to", "of", "and", "that", "have", "with"];
    static readonly char[] Bullets = ['•', '‣', '⁃', '◦', '-', '*', '–', '—'];
    static readonly char[] TerminalPunct = ['.', '!', '?', '"', '\'', '”', '’', ')', '…', '。', '！', '？'];

    static readonly (string Name, double Default, string Meaning)[] Rules = QualityFilter.Rules;
    readonly double[] _t;

    public QualityFilterReference(QualityFilter filter) => _t = Rules.Select(r => filter[r.Name]).ToArray();

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

    /// <summary>Each rule's value as the old <see cref="Check"/> computed it (NaN where its guard skipped the rule).</summary>
    public static double[] Measure(string text)
    {
        var words = text.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
        var lines = text.Split('\n').Select(l => l.Trim()).Where(l => l.Length > 0).ToArray();
        int n = words.Length;
        double wordChars = words.Sum(w => (double)w.Length);
        double meanLen = n == 0 ? 0 : wordChars / n;
        int hashes = 0, ellipses = 0;
        foreach (var w in words) { hashes += w.Count(c => c == '#'); ellipses += Count(w, "...") + w.Count(c => c == '…'); }
        double Share(Func<string, bool> p) => lines.Length > 0 ? lines.Count(p) / (double)lines.Length : double.NaN;
        var (dupLines, dupLineChars) = DuplicateLines(lines);
        var m = new List<double>
        {
            n, n, meanLen, meanLen,
            n > 0 ? (hashes + ellipses) / (double)n : double.NaN,
            Share(l => Bullets.Contains(l[0])),
            Share(l => l.EndsWith("...") || l.EndsWith('…')),
            Share(l => TerminalPunct.Contains(l[^1])),
            n > 0 ? words.Count(w => w.Any(char.IsLetter)) / (double)n : double.NaN,
            words.Select(w => w.ToLowerInvariant().Trim('.', ',', '!', '?', ';', ':', '"', '\'')).Where(StopWords.Contains).Count(),
            lines.Length > 0 ? dupLines / (double)lines.Length : double.NaN,
            dupLineChars,
        };
        for (int g = 2; g <= 4; g++) m.Add(wordChars > 0 ? TopNgramChars(words, g) / wordChars : double.NaN);
        for (int g = 5; g <= 10; g++) m.Add(wordChars > 0 ? DuplicateNgramChars(words, g) / wordChars : double.NaN);
        m.Add(text.Contains("lorem ipsum", StringComparison.OrdinalIgnoreCase) ? 1 : 0);
        m.Add(text.Contains('{') ? 1 : 0);
        return [.. m];
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
