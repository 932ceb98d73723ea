using System.Text.Json.Nodes;
using Supercluster.Data;
using Supercluster.Training;
using TorchSharp;

namespace Supercluster.Tests.Evaluation;

/// <summary>
/// A tiny byte-level GPT-2 trained by the project's trainer (with <c>--eval-task</c>) on one repeated sentence, and a
/// task file whose right answers are known by construction: the sentence's true continuation against the same words
/// shuffled and against words the model never saw.
/// </summary>
public sealed class TaskEvalFixture : IDisposable
{
    public const string Sentence = "the quick brown fox jumps over the lazy dog. ";
    public const int Steps = 100, EvalEvery = 50;

    /// <summary>(context, endings, label): the label is the true continuation of <see cref="Sentence"/>.</summary>
    public static readonly (string Context, string[] Endings, int Label)[] Questions =
    [
        ("the quick brown", ["fox jumps over", "jumps fox over", "cat sleeps under"], 0),
        ("jumps over the", ["dog lazy the", "lazy dog. the", "red hat. a"], 1),
        ("the lazy", ["jumps brown quick", "mice in vats", "dog. the quick"], 2),
        ("fox jumps", ["over the lazy dog.", "lazy the over dog.", "zebras vex them"], 0),
        ("dog. the quick", ["fox brown", "wind blew", "brown fox"], 2),
    ];

    readonly TempDir _dir = new();
    public string DataDir => _dir["data"];
    public string RunDir => _dir["run"];
    public string TaskFile => _dir["construct.jsonl"];
    /// <summary>The same questions in HellaSwag's published layout (context split into ctx_a and ctx_b, no ctx).</summary>
    public string HellaSwagFile => _dir["construct-hs.jsonl"];
    public string Checkpoint { get; }

    public TaskEvalFixture()
    {
        TorchSetup.Init();
        File.WriteAllLines(TaskFile, Questions.Select(q => new JsonObject
        {
            ["context"] = q.Context, ["endings"] = new JsonArray(q.Endings.Select(e => (JsonNode)e).ToArray()), ["label"] = q.Label,
        }.ToJsonString()));
        File.WriteAllLines(HellaSwagFile, Questions.Select((q, i) => new JsonObject
        {
            ["ind"] = i, ["activity_label"] = "Pangram", ["ctx_a"] = q.Context[..q.Context.LastIndexOf(' ')], ["ctx_b"] = q.Context[(q.Context.LastIndexOf(' ') + 1)..],
            ["split"] = "val", ["split_type"] = "indomain", ["label"] = q.Label, ["endings"] = new JsonArray(q.Endings.Select(e => (JsonNode)e).ToArray()),
            ["source_id"] = $"made~{i}",
        }.ToJsonString()));
        Preparer.Run(Enumerable.Range(0, 30).Select(_ => new Document(string.Concat(Enumerable.Repeat(Sentence, 20)))),
            new PrepareOptions { OutDir = DataDir, Tokenizer = "byte", ValFraction = 0.1 });
        int threads = torch.get_num_threads();
        torch.set_num_threads(1);   // tiny ops: one thread is faster than two fighting over a busy machine
        try
        {
            var result = new Trainer(new TrainOptions
            {
                DataDir = DataDir, OutDir = RunDir, Model = "tiny", NEmbd = 32, NHead = 4, BatchSize = 8, Steps = Steps, Lr = 1e-2, Warmup = 5,
                Device = "cpu", Seed = 3, EvalEvery = EvalEvery, EvalTokens = 256, EvalTask = $"{TaskFile},{HellaSwagFile}",
            }, TextWriter.Null).Run();
            Checkpoint = result.LastCheckpoint!;
        }
        finally
        {
            torch.set_num_threads(threads);
        }
    }

    public void Dispose() => _dir.Dispose();
}
