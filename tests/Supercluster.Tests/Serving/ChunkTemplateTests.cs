using System.Buffers;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Supercluster.Server.OpenAi;

namespace Supercluster.Tests.Serving;

/// <summary>A stream event built from the pre-serialised template is byte for byte the chunk serialised whole.</summary>
public class ChunkTemplateTests
{
    static JsonObject Chunk(string text, int index) => new()
    {
        ["id"] = "cmpl-0123", ["object"] = "text_completion", ["created"] = 1764672000L, ["model"] = "runs/<small> \"é\"",
        ["choices"] = new JsonArray(new JsonObject { ["text"] = text, ["index"] = index, ["logprobs"] = null, ["finish_reason"] = null }),
    };

    static string Fill(ChunkTemplate t, string text)
    {
        var buffer = new System.Buffers.ArrayBufferWriter<byte>();
        buffer.Write(t.Head);
        using (var json = new Utf8JsonWriter(buffer)) json.WriteStringValue(text);   // as Sse.Write escapes the text
        buffer.Write(t.Tail);
        return Encoding.UTF8.GetString(buffer.WrittenSpan);
    }

    [Theory]
    [InlineData("plain")]
    [InlineData("")]
    [InlineData("quote \" backslash \\ newline \n tab \t")]
    [InlineData("<html> & 'apostrophe' + plus")]
    [InlineData("é ü 中文 \U0001F600")]
    [InlineData("\u0001 the hole itself, and \u001f")]
    public void Template_plus_text_equals_the_whole_chunk(string text)
    {
        var t = new ChunkTemplate(Chunk(ChunkTemplate.Hole, 3));
        Assert.Equal(Chunk(text, 3).ToJsonString(), Fill(t, text));
    }

    [Fact]
    public void A_chunk_without_the_hole_is_refused()
    {
        Assert.Throws<ArgumentException>(() => new ChunkTemplate(Chunk("no hole", 0)));
    }
}
