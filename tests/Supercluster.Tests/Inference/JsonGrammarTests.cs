using System.Text;
using System.Text.Json;
using Supercluster.Inference.Structured;
using Supercluster.Tokenization;
using Xunit.Abstractions;

namespace Supercluster.Tests.Inference;

/// <summary>The JSON grammar / schema automaton byte by byte, and the token-level constraint's budget guarantee.</summary>
public class JsonGrammarTests(ITestOutputHelper output)
{
    static GrammarNode Schema(string json) => SchemaCompiler.Compile(JsonDocument.Parse(json).RootElement);

    /// <summary>The whole text is accepted and the value may end there.</summary>
    static bool Accepts(GrammarNode node, string text) => Accepts(node, Encoding.UTF8.GetBytes(text));

    static bool Accepts(GrammarNode node, byte[] bytes)
    {
        ParseState? s = ParseState.Of(node.Start(0));
        foreach (var b in bytes)
            if (ParseState.Feed(s, b, out s) != ParseState.Outcome.Consumed) return false;
        return ParseState.CanEnd(s);
    }

    const string Obj = """{"type":"object","properties":{"a":{"type":"integer"},"b":{"type":"string","maxLength":2},"c":{"type":"array","items":{"type":"number"},"minItems":1}},"required":["a"],"additionalProperties":false}""";

    [Theory]
    [InlineData("""{"a":1}""", true)]
    [InlineData("""{"a":-10,"b":"xy"}""", true)]
    [InlineData("""{"a":0,"c":[1.5e+3,-0.25]}""", true)]
    [InlineData("""{"a":1,"b":"é\n"}""", true)]
    [InlineData("""{"b":"x"}""", false)]               // a is required
    [InlineData("""{"b":"x","a":1}""", false)]         // keys in schema order
    [InlineData("""{"a":01}""", false)]
    [InlineData("""{"a":1.5}""", false)]               // integer
    [InlineData("""{"a":1,"b":"xyz"}""", false)]       // maxLength
    [InlineData("""{"a":1,"c":[]}""", false)]          // minItems
    [InlineData("""{"a":1,"d":2}""", false)]           // additionalProperties false
    [InlineData("""{"a":1} """, false)]                // nothing after the value
    [InlineData("""{ "a":1}""", false)]                // compact output
    [InlineData("""{"a":1""", false)]                  // not finished
    public void Schema_objects_accept_exactly_their_instances(string text, bool valid) => Assert.Equal(valid, Accepts(Schema(Obj), text));

    [Fact]
    public void Strings_are_valid_utf8_without_control_characters_or_lone_surrogates()
    {
        var s = new StringNode();
        Assert.True(Accepts(s, "\"\\u00e9\\n\\\"\""));
        Assert.True(Accepts(s, "\"日本\""));
        Assert.False(Accepts(s, "\"\\ud800\""));
        Assert.False(Accepts(s, "\"a\tb\""));
        Assert.False(Accepts(s, "\"\\x\""));
        Assert.False(Accepts(s, [(byte)'"', 0xC0, 0x80, (byte)'"']));          // overlong
        Assert.False(Accepts(s, [(byte)'"', 0xED, 0xA0, 0x80, (byte)'"']));    // UTF-8 surrogate
        Assert.False(Accepts(s, [(byte)'"', 0xE6, (byte)'"']));                // truncated character
    }

    [Fact]
    public void Free_objects_refuse_duplicate_keys_and_enums_consts_and_unions_match_their_members()
    {
        Assert.True(Accepts(FreeObjectNode.Instance, """{"a":[1,{"b":null}],"c":"x"}"""));
        Assert.False(Accepts(FreeObjectNode.Instance, """{"a":1,"a":2}"""));
        Assert.False(Accepts(FreeObjectNode.Instance, "[1]"));
        var e = Schema("""{"enum":["red",1,null,{"k":[2]}]}""");
        foreach (var ok in new[] { "\"red\"", "1", "null", """{"k":[2]}""" }) Assert.True(Accepts(e, ok), ok);
        foreach (var bad in new[] { "\"re\"", "12", "{}" }) Assert.False(Accepts(e, bad), bad);
        var u = Schema("""{"type":["integer","null","string"]}""");
        Assert.True(Accepts(u, "12") && Accepts(u, "null") && Accepts(u, "\"x\""));
        Assert.False(Accepts(u, "true"));
    }

    [Theory]
    [InlineData("""{"type":"string","pattern":"x"}""", "pattern")]
    [InlineData("""{"type":"object","properties":{"a":{"$ref":"#/defs/a"}}}""", "properties.a.$ref")]
    [InlineData("""{"type":"number","minimum":0}""", "minimum")]
    [InlineData("""{"type":"object","required":["z"],"properties":{"a":{}}}""", "required")]
    [InlineData("""{"type":"date"}""", "type")]
    public void Unsupported_schemas_name_the_keyword(string schema, string path) =>
        Assert.Equal(path, Assert.Throws<SchemaException>(() => Schema(schema)).Path);

    /// <summary>
    /// The budget guard: an adversary that always takes the allowed token leaving the most work still ends with a
    /// complete value within exactly the shortest output's length of tokens.
    /// </summary>
    [Fact]
    public void With_the_tightest_budget_every_path_still_closes_the_value()
    {
        var tokenizer = new ByteTokenizer();
        var trie = TokenTrie.For(tokenizer);
        var node = Schema(Obj.Replace("\"required\":[\"a\"]", "\"required\":[\"a\",\"b\",\"c\"]"));
        foreach (int extra in new[] { 0, 3, 10 })
        {
            var c = new TokenConstraint(node, trie, tokenizer.EotToken);
            int budget = c.MinLength + extra;
            var text = new List<byte>();
            for (int left = budget; left > 0; left--)
            {
                var allowed = c.Allowed(left)!;
                Assert.NotEmpty(allowed);
                // The worst token: not the stop token, and (among the rest) one that starts the longest continuation.
                int pick = allowed.Where(t => t != tokenizer.EotToken).DefaultIfEmpty(tokenizer.EotToken)
                    .OrderByDescending(t => t is (byte)'"' or (byte)'\\' ? 0 : t).First();
                c.Accept(pick);
                if (pick == tokenizer.EotToken) break;
                text.Add((byte)pick);
            }
            var json = Encoding.UTF8.GetString(text.ToArray());
            Assert.True(Accepts(node, text.ToArray()), json);
            Assert.Equal(tokenizer.EotToken, Assert.Single(c.Allowed(1)!));
            output.WriteLine($"budget {budget}: {json}");
        }
    }

    [Fact]
    public void The_gpt2_vocabulary_mask_keeps_only_tokens_that_continue_the_value()
    {
        var tokenizer = Tokenizers.Create("gpt2");
        var trie = TokenTrie.For(tokenizer);
        var c = new TokenConstraint(Schema(Obj), trie, tokenizer.EotToken);
        var sw = System.Diagnostics.Stopwatch.StartNew();
        var first = c.Allowed(100)!;
        output.WriteLine($"mask over {tokenizer.VocabSize} tokens at the start: {sw.Elapsed.TotalMilliseconds:F1} ms, {first.Length} allowed");
        Assert.Contains(tokenizer.Encode("{\"")[0], first);
        Assert.All(first, t => Assert.StartsWith("{", tokenizer.Decode([t])));
        foreach (var t in tokenizer.Encode("{\"a\":12,\"b\":\"x")) c.Accept(t);
        sw.Restart();
        var inString = c.Allowed(100)!;
        output.WriteLine($"mask inside a string: {sw.Elapsed.TotalMilliseconds:F1} ms, {inString.Length} allowed");
        // maxLength 2 with one character written: at most one more character before the closing quote.
        // (An escape such as \n or \\ is one character in two bytes.)
        Assert.All(inString, t => Assert.True(tokenizer.Decode([t]).Split('"')[0] is { } head && (head.Length <= 1 || head[0] == '\\'), tokenizer.Decode([t])));
        Assert.Contains(inString, t => tokenizer.Decode([t]).StartsWith("\"}"));
        Assert.DoesNotContain(tokenizer.EotToken, inString);
    }
}
