using System.Text.Json.Nodes;
using Supercluster.Data;
using Supercluster.Inference;
using Supercluster.Tokenization;

namespace Supercluster.Tests.FineTuning;

/// <summary><c>prepare --format chat</c>: the serving template, assistant-only loss masks, packing, bad records.</summary>
[Collection("Console")]
public class ChatDataTests
{
    public static string[] Records =>
    [
        """{"messages":[{"role":"system","content":"Write ads."},{"role":"user","content":"Product: tea. Audience: students."},{"role":"assistant","content":"Stay sharp, sip smart."}]}""",
        """{"prompt":"Product: socks. Audience: runners.","completion":"Miles feel shorter in our socks."}""",
        """{"messages":[{"role":"user","content":"Hi"},{"role":"assistant","content":"Hello."},{"role":"user","content":"Ad for pens?"},{"role":"assistant","content":"Write on."}]}""",
    ];

    public static string WriteJsonl(TempDir dir, IEnumerable<string> lines, string name = "chat.jsonl")
    {
        string path = dir[name];
        File.WriteAllLines(path, lines);
        return path;
    }

    [Fact]
    public void Only_assistant_replies_are_trained_and_the_prompt_part_is_the_serving_template()
    {
        var tok = Tokenizers.Create("byte");
        var c = ChatRecords.Parse(Records[2], "x.jsonl", 3);
        var (tokens, mask) = ChatPreparer.Tokenize(c, tok);
        string trained = tok.Decode(tokens.Where((_, i) => mask[i] == 1 && tokens[i] != tok.EotToken).ToArray());
        Assert.Equal(" Hello.\n\n Write on.", trained);
        Assert.Equal(1, mask[^1]);                                    // end-of-text after the last reply: the model learns to stop
        Assert.Equal(tok.EotToken, tokens[^1]);
        // Everything before the first reply is exactly what serve sends as the prompt for that reply.
        int first = mask.IndexOf(1);
        Assert.Equal(ChatTemplate.Render([("user", "Hi")]), tok.Decode(tokens.Take(first).ToArray()));
    }

    [Fact]
    public void Prepare_packs_conversations_into_fixed_sequences_with_parallel_mask_shards()
    {
        using var dir = new TempDir();
        var input = WriteJsonl(dir, Records.Concat(Records).Concat(Records));
        var meta = ChatPreparer.Run([input], new ChatPrepareOptions { OutDir = dir["data"], Tokenizer = "byte", SeqLen = 128, ValFraction = 0 });
        Assert.Equal(128, meta.Chat!.SeqLen);
        Assert.Equal(9, meta.Chat.Conversations);
        Assert.Equal(0, meta.Chat.Truncated + meta.Chat.Dropped);
        var shard = meta.TrainShards.Single();
        Assert.Equal(meta.Chat.Sequences * 128 + 1, shard.Tokens);   // whole sequences + one end-of-text
        using var reader = ShardReader.Open(Path.Combine(dir["data"], shard.File));
        using var masks = LossMask.Reader.Open(Path.Combine(dir["data"], LossMask.FileFor(shard.File)), reader.TokenCount);
        var m = new byte[reader.TokenCount];
        masks.Read(0, m, 0, m.Length);
        Assert.Equal(meta.Chat.TrainedTokens, m.Count(b => b == 1));
        // Every sequence starts a conversation (no conversation is split across sequences): its first byte is 'S', 'U'.
        for (long s = 0; s < meta.Chat.Sequences; s++) Assert.Contains((char)reader[s * 128], "SU");
        Assert.DoesNotContain(Directory.EnumerateFileSystemEntries(dir.Path), p => p.Contains(".tmp"));

        // The loader hands out the masks of the targets it hands out.
        using var loader = new TokenDataLoader(dir["data"], "train", 1, 128);
        var (x, y, t) = (new long[128], new long[128], new byte[128]);
        loader.NextBatch(x, y, t);
        for (int i = 0; i < 128; i++) Assert.Equal(m[i + 1], t[i]);
    }

    [Fact]
    public void Over_long_conversations_are_truncated_or_dropped_and_counted()
    {
        using var dir = new TempDir();
        var input = WriteJsonl(dir, Records);
        var cut = ChatPreparer.Run([input], new ChatPrepareOptions { OutDir = dir["cut"], Tokenizer = "byte", SeqLen = 70, ValFraction = 0 });
        var drop = ChatPreparer.Run([input], new ChatPrepareOptions { OutDir = dir["drop"], Tokenizer = "byte", SeqLen = 70, ValFraction = 0, Overlong = OverlongPolicy.Drop });
        Assert.True(cut.Chat!.Truncated > 0);
        Assert.Equal(cut.Chat.Truncated + cut.Chat.Dropped, drop.Chat!.Dropped);   // truncation drops one only when no reply is left
        Assert.Equal(3 - drop.Chat.Dropped, drop.TrainDocuments);
    }

    [Theory]
    [InlineData("not json", "chat.jsonl:2: not JSON")]
    [InlineData("""{"messages":[{"role":"user","content":"Hi"}]}""", "chat.jsonl:2: field 'messages' has no assistant turn")]
    [InlineData("""{"messages":[{"role":"tool","content":"x"},{"role":"assistant","content":"y"}]}""", "chat.jsonl:2: field 'messages[0].role' is 'tool'")]
    [InlineData("""{"messages":[{"role":"user","content":"Hi"},{"role":"assistant","content":"  "}]}""", "chat.jsonl:2: field 'messages[1].content' is empty")]
    [InlineData("""{"prompt":"Hi"}""", "chat.jsonl:2: field 'completion' is missing")]
    [InlineData("""{"text":"Hi"}""", "chat.jsonl:2: field 'messages' is missing")]
    public void A_bad_record_is_one_line_naming_file_line_and_field_and_nothing_is_written(string bad, string expected)
    {
        using var dir = new TempDir();
        var input = WriteJsonl(dir, [Records[0], bad, Records[1]]);
        var e = Assert.Throws<BadInputException>(() => ChatPreparer.Run([input], new ChatPrepareOptions { OutDir = dir["data"], Tokenizer = "byte", SeqLen = 64 }));
        Assert.Contains(expected, e.Message);
        Assert.DoesNotContain('\n', e.Message);
        Assert.Equal([input], Directory.GetFileSystemEntries(dir.Path));   // no output folder, no temporary left
    }

    [Fact]
    public void The_cli_prepares_chat_data_and_exits_2_on_a_bad_record()
    {
        using var dir = new TempDir();
        var good = WriteJsonl(dir, Records);
        var (code, output, _) = InProcessCli.Run([Supercluster.Cli.Commands.PrepareCommand.Create()], "prepare", "--format", "chat", "--input", good, "--tokenizer", "byte", "--seq-len", "128", "--val-fraction", "0", "--out", dir["data"]);
        Assert.True(code == 0, output);
        Assert.Contains("3 conversations", output);
        Assert.NotNull(JsonNode.Parse(File.ReadAllText(dir["data/meta.json"]))!["chat"]);
        var bad = WriteJsonl(dir, [Records[0], "{"], "bad.jsonl");
        var (code2, _, err) = InProcessCli.Run([Supercluster.Cli.Commands.PrepareCommand.Create()], "prepare", "--format", "chat", "--input", bad, "--tokenizer", "byte", "--seq-len", "128", "--out", dir["bad"]);
        Assert.Equal(2, code2);
        Assert.Contains("bad.jsonl:2: not JSON", err);
        Assert.False(Directory.Exists(dir["bad"]));
    }
}
