using System.Text.Json.Nodes;
using Supercluster.Tests.Serving;

namespace Supercluster.Tests.Search;

/// <summary><c>POST /v1/search</c> and <c>POST /v1/answers</c> on the fixture's real server and index.</summary>
[Collection("Serving")]
public class SearchApiTests(ServingFixture f)
{
    [Fact]
    public async Task Hybrid_search_returns_ids_fields_snippets_and_per_mode_scores_and_filters_apply()
    {
        var doc = ServingFixture.Docs[4];
        var (status, body) = await f.Http.PostJson("/v1/search", new JsonObject { ["query"] = "tariff surplus", ["top_k"] = 3 });
        Assert.Equal(200, status);
        Assert.Equal("hybrid", (string?)body["mode"]);
        var top = body["data"]![0]!;
        Assert.Equal(doc.Name, (string?)top["fields"]!["name"]);
        Assert.Contains("<mark>tariff</mark>", (string?)top["snippet"]);
        Assert.Equal(1, (int)top["scores"]!["keyword_rank"]!);
        Assert.True((double)top["scores"]!["keyword"]! > 0);
        Assert.NotNull(top["scores"]!["semantic"]);
        Assert.Equal("4", (string?)top["id"]); // documents without an id field are numbered in order

        (status, body) = await f.Http.PostJson("/v1/search", new JsonObject { ["query"] = "the union", ["mode"] = "semantic", ["top_k"] = 10, ["filters"] = new JsonObject { ["year"] = new JsonObject { ["gte"] = 2000 } } });
        Assert.Equal(200, status);
        Assert.Equal(["2003", "2010"], body["data"]!.AsArray().Select(h => (string)h!["fields"]!["year"]!).Order().ToArray());
        (status, body) = await f.Http.PostJson("/v1/search", new JsonObject { ["query"] = "state", ["mode"] = "keyword", ["filters"] = new JsonObject { ["name"] = new JsonArray("Clinton", "Jackson") } });
        Assert.Equal(200, status);
        Assert.All(body["data"]!.AsArray(), h => Assert.Contains((string)h!["fields"]!["name"]!, new[] { "Clinton", "Jackson" }));
    }

    [Theory]
    [InlineData("{\"query\": \"x\", \"filters\": {\"author\": \"a\"}}", "filters")]           // unknown field
    [InlineData("{\"query\": \"x\", \"filters\": {\"year\": {\"gte\": \"soon\"}}}", "filters")] // malformed bound
    [InlineData("{\"query\": \"x\", \"filters\": {\"year\": {\"around\": 5}}}", "filters")]     // unknown bound
    [InlineData("{\"query\": \"x\", \"filters\": {\"name\": {\"gte\": \"A\"}}}", "filters")]     // range on text
    [InlineData("{\"query\": \"x\", \"filters\": 3}", "filters")]
    [InlineData("{\"query\": \"   \"}", "query")]
    [InlineData("{\"top_k\": 3}", "query")]
    [InlineData("{\"query\": \"x\", \"mode\": \"fuzzy\"}", "mode")]
    [InlineData("{\"query\": \"x\", \"weights\": {\"keyword\": -1}}", "weights")]
    [InlineData("{\"query\": \"x\", \"weights\": {\"keyword\": 0, \"semantic\": 0}}", "weights")]
    [InlineData("{\"query\": \"x\", \"top_k\": 5000}", "top_k")]
    public async Task Bad_search_requests_get_openai_400s_naming_the_parameter(string json, string param)
    {
        var (s, body) = await f.Http.PostJson("/v1/search", json);
        Http.AssertError(s, body, 400, param);
    }

    [Fact]
    public async Task Answers_are_generated_from_the_top_passages_and_cite_their_ids()
    {
        var (status, body) = await f.Http.PostJson("/v1/answers", new JsonObject { ["question"] = "tariff", ["top_k"] = 2, ["max_tokens"] = 4, ["temperature"] = 0 });
        Assert.Equal(200, status);
        Assert.Equal("chat.completion", (string?)body["object"]);
        var cited = body["citations"]!.AsArray();
        Assert.InRange(cited.Count, 1, 2);
        Assert.Equal("4", (string?)cited[0]!["id"]);
        Assert.True((int)body["usage"]!["completion_tokens"]! <= 4);
        (status, body) = await f.Http.PostJson("/v1/answers", new JsonObject { ["question"] = "" });
        Http.AssertError(status, body, 400, "question");
    }
}
