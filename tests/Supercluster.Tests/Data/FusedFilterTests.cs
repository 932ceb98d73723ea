using System.Text;
using Supercluster.Data.Pipeline;

namespace Supercluster.Tests.Data;

/// <summary>
/// The one-pass <see cref="QualityFilter"/> against the rule-by-rule implementation it replaced
/// (<see cref="QualityFilterReference"/>): the same value for every rule (exactly: both sum whole character counts)
/// and the same decision under several threshold sets, on generated documents built to hit every rule's edge cases.
/// </summary>
public class FusedFilterTests
{
    static readonly string[] Vocabulary =
    [
        "the", "The", "THE.", "'with'", "be,", "to", "of", "and!", "that?", "have;", "w\u0130th", "\u212Aey", "th",
        "council", "budget", "river", "path", "x", "ab", "Supercalifragilistic", "#tag", "##", "a#b", "...", "....", "......",
        "wait...", "so…", "1234", "5,678", "2021", "日本語のテキスト", "中文", "naïve", "ǅemal", "🎉", "e\u0301", "(see)", "“quoted”",
        "lorem", "ipsum", "LOREM IPSUM", "{", "}", "f()", "-", "*", "•", "—", "end.", "end!", "end?", "end\"", "end'", "end”",
        "end’", "end)", "end。", "end！", "end？", "．．．", "...\u200B", "..\u00AD.", "\u200B",
    ];

    static readonly string[] Spaces = [" ", " ", " ", " ", "  ", "\t", "\u00A0", "\u3000", "\r\n", "\n", "\n\n", "\n  \n", " \n", "\u2028", "\u0085"];

    static string Document(Random rng)
    {
        var sb = new StringBuilder();
        int words = rng.Next(100) switch { < 5 => 0, < 20 => rng.Next(1, 20), _ => rng.Next(20, 400) };
        var lines = new List<string>();
        for (int i = 0; i < words; i++)
        {
            int r = rng.Next(100);
            if (r < 4 && sb.Length > 0) { var prior = sb.ToString(); int s = rng.Next(prior.Length); sb.Append(prior, s, Math.Min(prior.Length - s, rng.Next(1, 200))); } // repeated passage
            else if (r < 6 && lines.Count > 0) sb.Append('\n').Append(lines[rng.Next(lines.Count)]).Append('\n');                                  // repeated line
            else if (r < 8) sb.Append('\n').Append("-*•‣⁃◦–— x"[rng.Next(10)]).Append(' ');                                                         // bullet line
            else sb.Append(Vocabulary[rng.Next(Vocabulary.Length)]);
            sb.Append(Spaces[rng.Next(Spaces.Length)]);
            if (rng.Next(12) == 0) { var t = sb.ToString(); int nl = t.LastIndexOf('\n'); lines.Add(t[(nl + 1)..]); }
        }
        if (rng.Next(20) == 0) sb.Append("   \n\t ");
        return sb.ToString();
    }

    static readonly QualityFilter[] Settings =
    [
        new(),
        new(["min_words=20", "min_stop_words=0"]),                                           // the benchmark's setting
        new(["min_words=0", "min_mean_word_length=0", "max_mean_word_length=1000", "max_symbol_word_ratio=1000",
             "max_bullet_lines=1", "max_ellipsis_lines=1", "min_punct_lines=0", "min_alpha_words=0", "min_stop_words=0"]), // reach the later rules
        new(["min_words=0", "min_mean_word_length=0", "max_mean_word_length=1000", "max_symbol_word_ratio=1000",
             "max_bullet_lines=1", "max_ellipsis_lines=1", "min_punct_lines=0", "min_alpha_words=0", "min_stop_words=0",
             "max_dup_lines=1", "max_dup_line_chars=1", "max_top_2gram=1", "max_top_3gram=1", "max_top_4gram=1"]),
    ];

    [Fact]
    public void SameValuesAndDecisionsAsTheRuleByRuleFilter()
    {
        var rng = new Random(1402);
        var fired = new HashSet<string>();
        int nonZeroNgram = 0;
        for (int d = 0; d < 1500; d++)
        {
            var text = Document(rng);
            var expected = QualityFilterReference.Measure(text);
            var actual = QualityFilter.Measure(text);
            for (int k = 0; k < expected.Length; k++)
                Assert.True(expected[k].Equals(actual[k]), $"doc {d}, rule {QualityFilter.Rules[k].Name}: reference {expected[k]}, fused {actual[k]}\n{text}");
            if (actual[15] > 0) nonZeroNgram++;
            foreach (var f in Settings)
            {
                var rule = f.Check(text);
                Assert.Equal(new QualityFilterReference(f).Check(text), rule);
                if (rule is not null) fired.Add(rule);
            }
        }
        // The corpus reaches most rules (so agreement means something), including the repetition ones.
        Assert.True(fired.Count >= 15, $"rules that fired: {string.Join(", ", fired.Order())}");
        Assert.True(nonZeroNgram > 50, $"{nonZeroNgram} documents with a repeated 5-gram");
    }

    /// <summary>
    /// ASCII text, where the filter reads 32-character blocks as vector masks: words of 1–40 characters (across block
    /// edges; up to and past the 16 characters of a word key; repeated so the numbering matters), dot runs, '#' and line
    /// breaks at every offset, with an occasional non-ASCII character that sends its block down the scalar path.
    /// </summary>
    [Fact]
    public void AsciiBlocksMatchTheReference()
    {
        var rng = new Random(1404);
        string[] symbols = [".", "..", "...", "....", "#", "!", "\"", "'", "(", "…", "é"];
        string[] gaps = [" ", " ", " ", "  ", "\t", "\n", "\r\n", " \n ", "\n\n", "\v", "\f"];
        string[] stops = ["the", "The", "AND", "'to'", "of,", "be", "that.", "Have", "with", "tHe", "th", "thee"];
        var words = Enumerable.Range(0, 60).Select(i => new string((char)('a' + i % 26), 1 + rng.Next(40))).ToArray();
        for (int d = 0; d < 1500; d++)
        {
            var sb = new StringBuilder();
            int target = rng.Next(0, 700);
            while (sb.Length < target)
            {
                int r = rng.Next(100);
                string w = r < 10 ? stops[rng.Next(stops.Length)] : words[rng.Next(r < 40 ? 6 : words.Length)];
                if (rng.Next(8) == 0) w = rng.Next(2) == 0 ? w + symbols[rng.Next(symbols.Length)] : symbols[rng.Next(symbols.Length)] + w;
                if (rng.Next(20) == 0) w = w.Insert(rng.Next(w.Length + 1), symbols[rng.Next(symbols.Length)]);
                sb.Append(w).Append(gaps[rng.Next(gaps.Length)]);
            }
            var text = sb.ToString(0, Math.Min(sb.Length, target == 0 ? 0 : rng.Next(Math.Max(1, target - 40), sb.Length + 1)));
            // A dot run that ends a block, a whole block of the same word without one, then more dots (one "..." or not).
            if (d < 64) text = new string(' ', d) + "x.." + new string('b', 32) + ".y z";
            var expected = QualityFilterReference.Measure(text);
            var actual = QualityFilter.Measure(text);
            for (int k = 0; k < expected.Length; k++)
                Assert.True(expected[k].Equals(actual[k]), $"doc {d}, rule {QualityFilter.Rules[k].Name}: reference {expected[k]}, fused {actual[k]}\n{text}");
            foreach (var f in Settings) Assert.Equal(new QualityFilterReference(f).Check(text), f.Check(text));
        }
    }

    /// <summary>
    /// <see cref="QualityFilter.Check"/> skips n-gram levels whose rules provably cannot fail (bounds from the 2-grams):
    /// with one n-gram rule on at exactly a document's own value it passes, one step below it fails, as the reference says.
    /// </summary>
    [Fact]
    public void CheckSkipsOnlyNgramLevelsThatCannotFail()
    {
        string[] earlierOff = ["min_words=0", "min_mean_word_length=0", "max_mean_word_length=1000", "max_symbol_word_ratio=1000",
            "max_bullet_lines=1", "max_ellipsis_lines=1", "min_punct_lines=0", "min_alpha_words=0", "min_stop_words=0",
            "max_dup_lines=1", "max_dup_line_chars=1", "lorem_ipsum=0", "curly_brace=0"];
        var rng = new Random(1403);
        var failed = new int[QualityFilter.Rules.Length];
        for (int d = 0; d < 600; d++)
        {
            var text = Document(rng);
            var m = QualityFilter.Measure(text);
            for (int k = 12; k <= 20; k++)
            {
                if (!(m[k] > 0)) continue;
                var others = Enumerable.Range(12, 9).Where(j => j != k).Select(j => $"{QualityFilter.Rules[j].Name}=1000");
                foreach (var (limit, fails) in new[] { (m[k], false), (Math.BitDecrement(m[k]), true) })
                {
                    var f = new QualityFilter([.. earlierOff, .. others, $"{QualityFilter.Rules[k].Name}={limit:R}"]);
                    var rule = f.Check(text);
                    Assert.Equal(new QualityFilterReference(f).Check(text), rule);
                    Assert.Equal(fails ? QualityFilter.Rules[k].Name : null, rule);
                    if (fails) failed[k]++;
                }
            }
        }
        for (int k = 12; k <= 20; k++) Assert.True(failed[k] > 0, $"{QualityFilter.Rules[k].Name} never reached");
    }

    [Theory]
    [InlineData("")]
    [InlineData("   \n\n\t")]
    [InlineData("word")]
    [InlineData("a a")]
    [InlineData("the end...\u200B\nthe end．．．\nthe end..\u00AD.\n")]
    [InlineData("one two three four five one two three four five one two three four five six")]
    public void EdgeCasesMatchTheReference(string text)
    {
        Assert.Equal(QualityFilterReference.Measure(text), QualityFilter.Measure(text));
        foreach (var f in Settings) Assert.Equal(new QualityFilterReference(f).Check(text), f.Check(text));
    }

    /// <summary>A document of many lines grows the per-thread line table past the size that is dropped after it: the
    /// documents after it still count their repeated lines as the reference does (same thread).</summary>
    [Fact]
    public void DocumentsAfterAManyLineOneMatchTheReference()
    {
        var texts = new[]
        {
            string.Join("\n", Enumerable.Range(0, 6000).Select(i => $"line {i % 4500} of many.")),
            "one line.\nanother line.\none line.",
            "x y z.\nx y z.\nx y z.\nw.",
            "single line only.",
        };
        foreach (var text in texts) Assert.Equal(QualityFilterReference.Measure(text), QualityFilter.Measure(text));
    }
}
