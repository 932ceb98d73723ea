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
        Assert.False(Accepts(s, "\"\\uDFFF\""));
        // Only D800–DFFF are surrogates: the private-use area and the specials after it are text (a \uE or \uF
        // that no digit could continue once left a json_object output cut off mid-escape).
        Assert.True(Accepts(s, "\"\\uE000\\uFFFD\\ud7ff\""));
        Assert.False(Accepts(s, "\"a\tb\""));
        Assert.False(Accepts(s, "\"\\x\""));
        Assert.False(Accepts(s, [(byte)'"', 0xC0, 0x80, (byte)'"']));          // overlong
        Assert.False(Accepts(s, [(byte)'"', 0xED, 0xA0, 0x80, (byte)'"']));    // UTF-8 surrogate
        Assert.False(Accepts(s, [(byte)'"', 0xE6, (byte)'"']));                // truncated character
    }

    const string Person = """
        {"type":"object","additionalProperties":false,"required":["name","age","address","tags"],"properties":{
          "name":{"type":"string","maxLength":6},"age":{"type":"integer"},"score":{"type":"number"},"ok":{"type":"boolean"},
          "nick":{"type":["string","null"]},"kind":{"enum":["a","b",3,null]},"version":{"const":"v1"},
          "address":{"type":"object","additionalProperties":false,"required":["city"],"properties":{"city":{"type":"string","minLength":1},"zip":{"anyOf":[{"type":"string"},{"type":"integer"}]}}},
          "tags":{"type":"array","items":{"type":"string","enum":["x","y"]},"maxItems":3},"extra":{}}}
        """;

    /// <summary>
    /// The property the API promises, by brute force: random walks through the masks (uniform over the allowed tokens,
    /// the stop token included) over a byte vocabulary always end in text that parses as an object — and, for a
    /// schema, validates against it — with a budget of the shortest output plus 40 tokens. Seeded, so a failure names
    /// its walk. (json_object walk 1169 once ended mid-escape: `\uF` had no live continuation.)
    /// </summary>
    [Theory]
    [InlineData(null, 5000)]
    [InlineData(Obj, 2000)]
    [InlineData(Person, 2000)]
    public void Random_walks_through_the_masks_always_end_in_a_valid_object(string? schemaText, int walks)
    {
        var tokenizer = new ByteTokenizer();
        var trie = TokenTrie.For(tokenizer);
        var node = schemaText is null ? FreeObjectNode.Instance : Schema(schemaText);
        var validator = schemaText is null ? null : Json.Schema.JsonSchema.FromText(schemaText);
        var rng = new Random(1);
        for (int walk = 0; walk < walks; walk++)
        {
            var c = new TokenConstraint(node, trie, tokenizer.EotToken);
            var text = new List<byte>();
            for (int left = c.MinLength + 40; left > 0; left--)
            {
                var allowed = c.Allowed(left)!;
                int pick = allowed[rng.Next(allowed.Length)];
                c.Accept(pick);
                if (pick == tokenizer.EotToken) break;
                text.Add((byte)pick);
            }
            JsonDocument doc;
            try { doc = JsonDocument.Parse(text.ToArray()); }
            catch (JsonException e) { throw new Xunit.Sdk.XunitException($"walk {walk}: {Convert.ToHexString(text.ToArray())}: {e.Message}"); }
            using (doc)
            {
                Assert.True(doc.RootElement.ValueKind == JsonValueKind.Object, $"walk {walk}: {Encoding.UTF8.GetString(text.ToArray())}");
                if (validator is not null)
                    Assert.True(validator.Evaluate(doc.RootElement).IsValid, $"walk {walk}: {Encoding.UTF8.GetString(text.ToArray())}");
            }
        }
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

    /// <summary>
    /// The cached mask (one trie walk per parser state, then a budget prefix) is the same set as walking the trie at
    /// every step, along whole outputs of a schema and of json_object mode on GPT-2's vocabulary, at a loose and a
    /// tight budget; repeated states (inside strings, between values) are lookups.
    /// </summary>
    [Theory]
    [InlineData(Obj, "{\"a\":12,\"b\":\"xy\",\"c\":[1.5,-2]}")]
    [InlineData("""{"type":"object","properties":{"note":{"type":"string"},"tags":{"type":"array","items":{"type":"string"}}},"required":["note","tags"]}""",
        "{\"note\":\"the state of the union is strong\",\"tags\":[\"war\",\"peace\",\"tariff\"]}")]
    [InlineData(null, "{\"text\":\"we the people of the united states\",\"n\":[1,2,{\"k\":null}],\"ok\":true}")]
    public void The_cached_mask_equals_the_walked_mask(string? schema, string json)
    {
        var tokenizer = Tokenizers.Create("gpt2");
        var trie = TokenTrie.For(tokenizer);
        var node = schema is null ? FreeObjectNode.Instance : Schema(schema);
        var c = new TokenConstraint(node, trie, tokenizer.EotToken);
        var tokens = tokenizer.Encode(json);
        long hits0 = trie.Masks.Hits;
        var cached = System.Diagnostics.Stopwatch.StartNew();
        cached.Stop();
        var walked = new System.Diagnostics.Stopwatch();
        for (int i = 0; i <= tokens.Length; i++)
        {
            foreach (int left in new[] { 200, tokens.Length - i + 1 })
            {
                cached.Start();
                var fast = c.Allowed(left)!;
                cached.Stop();
                walked.Start();
                var reference = c.AllowedUncached(left)!;
                walked.Stop();
                Assert.Equal(reference.Order(), fast.Order());
            }
            if (i < tokens.Length)
            {
                Assert.Contains(tokens[i], c.Allowed(tokens.Length - i + 1)!);
                c.Accept(tokens[i]);
            }
        }
        Assert.Equal(tokenizer.EotToken, Assert.Single(c.Allowed(1)!));
        output.WriteLine($"{tokens.Length} tokens: cached masks {cached.Elapsed.TotalMilliseconds:F0} ms, walked {walked.Elapsed.TotalMilliseconds:F0} ms, cache hits {trie.Masks.Hits - hits0}, states {trie.Masks.Count}");
        Assert.True(trie.Masks.Hits - hits0 >= tokens.Length, "every state is looked up at least twice (two budgets), so at least one lookup per token hits");
    }

    /// <summary>A string without maxLength is one state at every length past minLength; with maxLength each length is its own.</summary>
    [Fact]
    public void State_keys_merge_only_states_with_the_same_future()
    {
        static ParseState? Feed(GrammarNode n, string text)
        {
            ParseState? s = ParseState.Of(n.Start(0));
            foreach (var b in Encoding.UTF8.GetBytes(text)) Assert.Equal(ParseState.Outcome.Consumed, ParseState.Feed(s, b, out s));
            return s;
        }
        var free = new StringNode(minLength: 2);
        Assert.Equal(StateKey.Of(Feed(free, "\"abc")), StateKey.Of(Feed(free, "\"abcdef")));
        Assert.NotEqual(StateKey.Of(Feed(free, "\"a")), StateKey.Of(Feed(free, "\"ab")));      // minLength not reached yet
        var bounded = new StringNode(maxLength: 9);
        Assert.NotEqual(StateKey.Of(Feed(bounded, "\"abc")), StateKey.Of(Feed(bounded, "\"abcd")));
        var lit = new LiteralNode("true", "false");
        Assert.Equal(StateKey.Of(Feed(lit, "t")), StateKey.Of(Feed(new LiteralNode("true"), "t")));              // same tails: "rue"
        Assert.NotEqual(StateKey.Of(Feed(lit, "t")), StateKey.Of(Feed(new LiteralNode("true", "trap"), "t")));   // different tails
        Assert.Equal(StateKey.Of(Feed(FreeObjectNode.Instance, "{\"a\":[1,")), StateKey.Of(Feed(FreeObjectNode.Instance, "{\"a\":[1,")));
        Assert.NotEqual(StateKey.Of(Feed(FreeObjectNode.Instance, "{\"a\":1,")), StateKey.Of(Feed(FreeObjectNode.Instance, "{\"b\":1,")));   // "a" may not repeat in one
    }
}
