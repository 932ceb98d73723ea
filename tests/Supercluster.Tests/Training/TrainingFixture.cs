using Supercluster.Data;

namespace Supercluster.Tests.Training;

/// <summary>A small byte-tokenized corpus on disk, prepared once for the training tests.</summary>
public sealed class TrainingFixture : IDisposable
{
    readonly TempDir _dir = new();

    public TrainingFixture()
    {
        // Varied but learnable English-like text: enough for several epochs of tiny batches.
        var rng = new Random(12);
        string[] subjects = ["The union", "Our people", "The congress", "This nation", "The economy", "Every citizen"];
        string[] verbs = ["is strong", "must grow", "will endure", "has prospered", "shall defend liberty", "seeks peace"];
        var docs = Enumerable.Range(0, 60).Select(i =>
            new Document(string.Join(" ", Enumerable.Range(0, 40).Select(_ => $"{subjects[rng.Next(subjects.Length)]} {verbs[rng.Next(verbs.Length)]}.")))).ToList();
        Preparer.Run(docs, new PrepareOptions { OutDir = DataDir, Tokenizer = "byte", ValFraction = 0.1 });
    }

    public string DataDir => _dir["data"];

    public void Dispose() => _dir.Dispose();
}
