using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;

namespace Supercluster.Tests.Serving;

/// <summary>Small HTTP helpers for the serving tests.</summary>
public static class Http
{
    public static async Task<(int Status, JsonNode Body)> PostJson(this HttpClient c, string path, string json, string? key = null, CancellationToken ct = default)
    {
        using var req = new HttpRequestMessage(HttpMethod.Post, path) { Content = new StringContent(json, Encoding.UTF8, "application/json") };
        if (key is not null) req.Headers.Authorization = new AuthenticationHeaderValue("Bearer", key);
        using var resp = await c.SendAsync(req, ct);
        var text = await resp.Content.ReadAsStringAsync(ct);
        return ((int)resp.StatusCode, JsonNode.Parse(text)!);
    }

    public static Task<(int Status, JsonNode Body)> PostJson(this HttpClient c, string path, JsonNode body, string? key = null, CancellationToken ct = default) =>
        c.PostJson(path, body.ToJsonString(), key, ct);

    public static async Task<JsonNode> GetJson(this HttpClient c, string path)
    {
        using var resp = await c.GetAsync(path);
        Assert.True(resp.IsSuccessStatusCode, $"GET {path}: {(int)resp.StatusCode}");
        return JsonNode.Parse(await resp.Content.ReadAsStringAsync())!;
    }

    /// <summary>Reads an SSE response: the JSON chunks and whether it ended with [DONE].</summary>
    public static async Task<(List<JsonNode> Chunks, bool Done, string ContentType)> PostStream(this HttpClient c, string path, JsonNode body)
    {
        using var req = new HttpRequestMessage(HttpMethod.Post, path) { Content = new StringContent(body.ToJsonString(), Encoding.UTF8, "application/json") };
        using var resp = await c.SendAsync(req, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(200, (int)resp.StatusCode);
        using var reader = new StreamReader(await resp.Content.ReadAsStreamAsync());
        var chunks = new List<JsonNode>();
        bool done = false;
        while (await reader.ReadLineAsync() is { } line)
        {
            if (line.Length == 0) continue;
            Assert.StartsWith("data: ", line);
            var data = line[6..];
            if (data == "[DONE]") { done = true; continue; }
            Assert.False(done, "data after [DONE]");
            chunks.Add(JsonNode.Parse(data)!);
        }
        return (chunks, done, resp.Content.Headers.ContentType?.MediaType ?? "");
    }

    public static void AssertError(int status, JsonNode body, int expectedStatus, string? param = null)
    {
        Assert.True(status == expectedStatus, $"expected {expectedStatus}, got {status}: {body.ToJsonString()}");
        var err = body["error"] ?? throw new Xunit.Sdk.XunitException($"no 'error' object: {body.ToJsonString()}");
        Assert.False(string.IsNullOrEmpty((string?)err["message"]));
        Assert.NotNull((string?)err["type"]);
        if (param is not null) Assert.Equal(param, (string?)err["param"]);
    }
}
