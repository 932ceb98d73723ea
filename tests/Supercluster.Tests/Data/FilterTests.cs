using Supercluster.Data;
using Supercluster.Data.Pipeline;

namespace Supercluster.Tests.Data;

/// <summary>Each quality rule, PII pattern and field condition on hand-made documents.</summary>
public class FilterTests
{
    // 60 ordinary English words with stop words and terminal punctuation: passes every rule.
    const string Good = "The committee met on Tuesday to discuss the budget of the city and the plans that have been made with the council. " +
        "Members agreed that the new library should open next spring, and the mayor promised to publish the final figures before the vote. " +
        "Several residents spoke about parking, schools and the river path.";

    static readonly QualityFilter Filter = new();

    [Fact]
    public void OrdinaryProsePasses() => Assert.Null(Filter.Check(Good));

    [Theory]
    [InlineData("min_words", "The cat sat on the mat and that was the end of it.")]
    [InlineData("max_words", Good + " ")]
    [InlineData("max_dup_line_chars", "The vote on the plan was put off until the next meeting of the board.\n")]
    [InlineData("min_mean_word_length", "a b c d e f g h i j k l m n o p q r s t u v w x y z a b c d e f g h i j k l m n o p q r s t u v w x y z to of the and.")]
    [InlineData("max_mean_word_length", "Supercalifragilistic extraordinarily incomprehensibilities notwithstanding institutionalisation ")]
    [InlineData("max_symbol_word_ratio", "#tag ")]
    [InlineData("max_bullet_lines", "- item\n")]
    [InlineData("max_ellipsis_lines", "and so it goes...\n")]
    [InlineData("min_punct_lines", "a line without an ending\n")]
    [InlineData("min_alpha_words", "1234 5678 ")]
    [InlineData("min_stop_words", "Quick brown foxes jump over lazy dogs near green fields while birds sing loudly above tall trees. ")]
    [InlineData("max_dup_lines", "Buy cheap watches today at our store.\n")]
    [InlineData("lorem_ipsum", "LOREM IPSUM dolor sit amet.")]
    [InlineData("curly_brace", "function f() { return the value; }")]
    public void EachRuleRemovesItsCase(string rule, string seed)
    {
        var text = rule switch
        {
            "min_words" => seed,
            "max_words" => LongProse(100_008), // just over the default 100,000 words, without repeated n-grams
            // One long line said twice among distinct short ones: 1 line in 9 repeats (under max_dup_lines) but it
            // holds over a third of the characters.
            "max_dup_line_chars" => Good + "\n" + string.Concat(new[] { "Anna", "Ben", "Cleo", "Dev", "Eli", "Finn", "Gus" }.Select(n => $"{n} asked that the notes be sent by mail.\n")) + Good + "\n",
            "min_mean_word_length" or "max_mean_word_length" or "min_stop_words" =>
                string.Concat(Enumerable.Repeat(seed, 60 / seed.Split(' ', StringSplitOptions.RemoveEmptyEntries).Length + 1)),
            "max_symbol_word_ratio" => Good + " " + string.Concat(Enumerable.Repeat(seed, 15)),
            "min_alpha_words" => string.Concat(Enumerable.Repeat(seed, 15)) + Good,
            "max_bullet_lines" => string.Concat(Enumerable.Repeat(seed, 10)) + Good,
            "max_ellipsis_lines" => string.Concat(Enumerable.Repeat(seed, 6)) + Good, // 6 ellipses in 78 words: under the symbol ratio
            "min_punct_lines" => string.Concat(Enumerable.Repeat(seed, 10)) + Good,
            "max_dup_lines" => Good + "\n" + string.Concat(Enumerable.Repeat(seed, 5)),
            _ => seed + " " + Good,
        };
        if (rule is "max_bullet_lines") text = string.Concat(Enumerable.Repeat("- " + Good + "\n", 3));
        if (rule is "min_stop_words") text = string.Concat(Enumerable.Repeat(seed, 5));
        Assert.Equal(rule, Filter.Check(text));
    }

    /// <summary>Sentences of random made-up words between stop words, so no rule but the word count applies.</summary>
    static string LongProse(int words)
    {
        var rng = new Random(5);
        string W() => new([.. Enumerable.Range(0, rng.Next(4, 8)).Select(_ => (char)('a' + rng.Next(26)))]);
        var sb = new System.Text.StringBuilder();
        for (int n = 0; n < words; n += 8) sb.Append($"The {W()} {W()} of {W()} and {W()} with {W()} {W()}. ");
        return sb.ToString();
    }

    [Fact]
    public void RepetitionRulesCatchRepeatedNgrams()
    {
        // One phrase repeated: the top 2-gram covers far more than 20% of the characters.
        var spam = string.Concat(Enumerable.Repeat("best price ", 30)) + Good;
        Assert.Equal("max_top_2gram", Filter.Check(spam));
        // Three 12-word sentences repeated after the prose: duplicated 5-grams, no top-n-gram dominance.
        var block = "Every member of the board should read the report before the meeting. ";
        var repeated = Good + " " + block + "Then " + block + "And " + block;
        Assert.StartsWith("max_dup_", new QualityFilter(["max_top_2gram=1", "max_top_3gram=1", "max_top_4gram=1"]).Check(repeated));
        Assert.Null(new QualityFilter(["max_top_2gram=1", "max_top_3gram=1", "max_top_4gram=1", "max_dup_5gram=1", "max_dup_6gram=1", "max_dup_7gram=1",
            "max_dup_8gram=1", "max_dup_9gram=1", "max_dup_10gram=1"]).Check(repeated));
    }

    [Fact]
    public void ThresholdsAreOptionsAndBadOnesAreNamed()
    {
        const string Short = "The committee met on Tuesday to discuss the budget with the council.";
        Assert.Equal("min_words", Filter.Check(Short));
        Assert.Null(new QualityFilter(["min_words=5"]).Check(Short));
        Assert.Equal(5, new QualityFilter(["min_words=5"])["min_words"]);
        Assert.Contains("'words=5'", Assert.Throws<BadInputException>(() => new QualityFilter(["words=5"])).Message);
        Assert.Contains("non-negative", Assert.Throws<BadInputException>(() => new QualityFilter(["min_words=-1"])).Message);
    }

    [Theory]
    [InlineData("write to jane.doe+news@example.co.uk today", "write to <EMAIL> today", 0)]
    [InlineData("call (555) 123-4567 or 555.123.4567", "call <PHONE> or <PHONE>", 1)]
    [InlineData("from +44 20 7946 0958 ok", "from <PHONE> ok", 1)]
    [InlineData("host 192.168.1.20 and 2001:db8::8a2e:370:7334 down", "host <IP> and <IP> down", 2)]
    [InlineData("ring \u0665\u0665\u0665-\u0661\u0662\u0663-\u0664\u0665\u0666\u0667 now", "ring <PHONE> now", 1)] // \d is any Unicode digit (Arabic-Indic here): the digit test must see it
    [InlineData("a@example.com then 555-123-4567", "<EMAIL> then <PHONE>", 1)]
    public void PiiIsReplacedAndCounted(string text, string expected, int kind)
    {
        var counts = new long[3];
        Assert.Equal(expected, PiiScrubber.Scrub(text, counts));
        Assert.True(counts[kind] >= 1);
    }

    [Theory]
    [InlineData("follow @jane_doe on social")]
    [InlineData("see version 1.2.3 and v2.10.4 and 1.2.3.4.5")]
    [InlineData("meeting on 2023-01-15 at 12:30:45")]
    [InlineData("order 1234567890 and ISBN 978-3-16-148410-0")]
    [InlineData("999.1.1.1 is not an address, neither is a@b")]
    [InlineData("pi is 3.14159 and the total is 1,234,567")]
    public void LookAlikesAreLeftAlone(string text)
    {
        var counts = new long[3];
        Assert.Equal(text, PiiScrubber.Scrub(text, counts));
        Assert.All(counts, c => Assert.Equal(0, c));
    }

    [Fact]
    public void FieldConditions()
    {
        var f = new FieldFilter(["lang=en", "kind!=ad"], ["likes=10"], ["likes=1000"]);
        Document D(params (string, string)[] kv) => new("text", kv.ToDictionary(x => x.Item1, x => x.Item2));
        Assert.Null(f.Check(D(("lang", "en"), ("kind", "post"), ("likes", "10"))));
        Assert.Equal("where:lang=en", f.Check(D(("lang", "de"), ("likes", "50"))));
        Assert.Equal("where:lang=en", f.Check(new Document("no metadata")));
        Assert.Equal("where:kind!=ad", f.Check(D(("lang", "en"), ("kind", "ad"), ("likes", "50"))));
        Assert.Equal("min-field:likes=10", f.Check(D(("lang", "en"), ("kind", "post"), ("likes", "9.5"))));
        Assert.Equal("min-field:likes=10", f.Check(D(("lang", "en"), ("kind", "post"), ("likes", "many"))));
        Assert.Equal("max-field:likes=1000", f.Check(D(("lang", "en"), ("kind", "post"), ("likes", "1e6"))));
        Assert.Contains("--min-field 'likes'", Assert.Throws<BadInputException>(() => new FieldFilter(null, ["likes"], null)).Message);
    }

    [Fact]
    public void PrepareCountsEachStageInMetaJson()
    {
        using var dir = new TempDir();
        var docs = new List<Document>
        {
            new(Good, new Dictionary<string, string> { ["lang"] = "en" }),
            new(Good.Replace("Tuesday", "Friday") + " Mail me at a.b@example.com.", new Dictionary<string, string> { ["lang"] = "en" }),
            new("too short.", new Dictionary<string, string> { ["lang"] = "en" }),
            new(Good, new Dictionary<string, string> { ["lang"] = "fr" }),
            new("   ", new Dictionary<string, string> { ["lang"] = "en" }),
        };
        var meta = Preparer.Run(docs, new PrepareOptions
        {
            OutDir = dir["o"], Tokenizer = "byte", ValFraction = 0, Filter = new QualityFilter(), ScrubPii = true,
            Fields = new FieldFilter(["lang=en"], null, null),
        }).Meta;
        var p = meta.Pipeline!;
        Assert.Equal(5, p.DocumentsRead);
        Assert.Equal(2, p.DocumentsKept);
        Assert.Equal(1, p.Removed["fields:where:lang=en"].Documents);
        Assert.Equal(1, p.Removed["filter:min_words"].Documents);
        Assert.Equal(10, p.Removed["filter:min_words"].Characters);
        Assert.Equal(1, p.Removed["empty"].Documents);
        Assert.Equal(1, p.PiiReplaced!["email"]);
        Assert.Equal(0, p.ExactDuplicatesFound);
        Assert.Equal(meta.Pipeline!.DocumentsKept, meta.TrainDocuments);
    }
}
