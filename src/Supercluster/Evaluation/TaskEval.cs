using Supercluster.Model;
using Supercluster.Tokenization;
using static TorchSharp.torch;

namespace Supercluster.Evaluation;

/// <summary>A question's endings as scored: cross-entropy of each ending, and the choices it leads to.</summary>
/// <param name="Pred">argmin over endings of the summed cross-entropy (= the most likely ending).</param>
/// <param name="PredNorm">argmin over endings of the mean cross-entropy per ending token (length-normalised).</param>
public sealed record ExampleScore(TaskExample Example, RowScore[] Endings, int Pred, int PredNorm);

/// <summary>A task file as the model reads it: per question, one row per ending.</summary>
public sealed record RenderedTask(TaskSet Set, IReadOnlyList<IReadOnlyList<ScoredRow>> Groups, int TruncatedContexts);

/// <summary>Accuracy of a task file: <see cref="Acc"/> from summed, <see cref="AccNorm"/> from per-token-mean log-likelihood.</summary>
public sealed record TaskResult(string Name, string Path, int Count, int Correct, int CorrectNorm, int TruncatedContexts, IReadOnlyDictionary<string, int> Formats)
{
    public double Acc => (double)Correct / Count;
    public double AccNorm => (double)CorrectNorm / Count;
}

/// <summary>
/// Multiple-choice scoring by likelihood, as llm.c scores HellaSwag (dev/data/hellaswag.py, "completion style"):
/// context and each ending " " + ending are tokenized apart and concatenated; the loss of an ending is the
/// cross-entropy of its tokens given the context and the ending tokens before them. The prediction is the ending of
/// least summed loss (<c>acc</c>) and of least mean loss per ending token (<c>acc_norm</c>; llm.c's avg_loss).
/// An empty context starts from end-of-text (what a document follows in training). A context that does not fit the
/// model's window loses its first tokens; an ending that does not fit is bad input.
/// </summary>
public static class TaskEval
{
    /// <summary>Put between context and ending, as llm.c (" " + ending, "because GPT-2 tokenizer") and lm-eval's target_delimiter.</summary>
    public const string EndingDelimiter = " ";

    /// <summary>
    /// The rows of one question: context + ending per ending, each at most context + 1 tokens, scored over the ending;
    /// <paramref name="truncated"/> says whether the context lost tokens to fit.
    /// </summary>
    public static IReadOnlyList<ScoredRow> Render(TaskExample ex, TextTokenizer tokenizer, int modelContext, string path, out bool truncated)
    {
        int[] ctx = tokenizer.Encode(ex.Context);
        if (ctx.Length == 0) ctx = [tokenizer.EotToken];
        truncated = false;
        var rows = new List<ScoredRow>(ex.Endings.Count);
        for (int i = 0; i < ex.Endings.Count; i++)
        {
            int[] end = tokenizer.Encode(EndingDelimiter + ex.Endings[i]);
            if (end.Length > modelContext)
                throw new BadInputException($"{path}:{ex.Line}: field 'endings[{i}]' is {end.Length} tokens; the model's context of {modelContext} tokens scores at most {modelContext}");
            int[] row = [.. ctx, .. end];
            if (row.Length > modelContext + 1) { row = row[^(modelContext + 1)..]; truncated = true; }
            rows.Add(new ScoredRow(row, row.Length - end.Length));
        }
        return rows;
    }

    /// <summary>
    /// Every question of <paramref name="set"/> as rows for the model (bad input here: an ending longer than the
    /// model's window), done once so that a run checks its task files before training and scores them often.
    /// </summary>
    public static RenderedTask Render(TaskSet set, TextTokenizer tokenizer, int modelContext)
    {
        int truncated = 0;
        var groups = set.Examples.Select(ex =>
        {
            var rows = Render(ex, tokenizer, modelContext, set.Path, out bool cut);
            if (cut) truncated++;
            return rows;
        }).ToList();
        return new RenderedTask(set, groups, truncated);
    }

    /// <summary>Scores every question of <paramref name="set"/> (all endings of a question in one forward).</summary>
    public static (TaskResult Result, ExampleScore[] Examples) Evaluate(CausalLM model, TextTokenizer tokenizer, TaskSet set, int batchRows, Device device) =>
        Evaluate(model, Render(set, tokenizer, model.Config.SeqLen), batchRows, device);

    /// <summary>Scores every question of a rendered task (all endings of a question in one forward).</summary>
    public static (TaskResult Result, ExampleScore[] Examples) Evaluate(CausalLM model, RenderedTask task, int batchRows, Device device)
    {
        var set = task.Set;
        var scores = LikelihoodScorer.Score(model, task.Groups, batchRows, device);
        var examples = set.Examples.Select((ex, i) => new ExampleScore(ex, scores[i],
            ArgMin(scores[i].Select(s => s.SumNats)), ArgMin(scores[i].Select(s => s.MeanNats)))).ToArray();
        var result = new TaskResult(set.Name, set.Path, examples.Length,
            examples.Count(e => e.Pred == e.Example.Label), examples.Count(e => e.PredNorm == e.Example.Label), task.TruncatedContexts, set.Formats);
        return (result, examples);
    }

    /// <summary>Index of the smallest value; the first on ties (as torch.argmin).</summary>
    static int ArgMin(IEnumerable<double> values)
    {
        int best = -1, i = 0;
        double min = double.PositiveInfinity;
        foreach (var v in values)
        {
            if (best < 0 || v < min) { min = v; best = i; }
            i++;
        }
        return best;
    }

    /// <summary>The numbers of a result as <c>eval --json</c> prints them and <c>train</c> logs them (type "task_eval").</summary>
    public static System.Text.Json.Nodes.JsonObject ToJson(TaskResult r) => new()
    {
        ["task"] = r.Name, ["file"] = System.IO.Path.GetFileName(r.Path), ["count"] = r.Count, ["acc"] = r.Acc, ["acc_norm"] = r.AccNorm,
        ["correct"] = r.Correct, ["correct_norm"] = r.CorrectNorm, ["truncated_contexts"] = r.TruncatedContexts,
    };

    /// <summary>The <c>metrics.jsonl</c> record of a task evaluation during training (the dashboard charts acc and acc_norm).</summary>
    public static System.Text.Json.Nodes.JsonObject MetricsRecord(TaskResult r, long step, double timeSeconds)
    {
        var record = new System.Text.Json.Nodes.JsonObject { ["type"] = "task_eval", ["step"] = step };
        foreach (var (key, value) in ToJson(r)) record[key] = value?.DeepClone();
        record["time_s"] = Math.Round(timeSeconds, 3);
        return record;
    }

    /// <summary>One line per task file, as <c>eval</c> and <c>train</c> print it.</summary>
    public static string Describe(TaskResult r) =>
        $"{r.Path}: {r.Count:N0} question{(r.Count == 1 ? "" : "s")} ({string.Join(", ", r.Formats.Select(f => $"{f.Key}"))}), acc {r.Acc:F4}, acc_norm {r.AccNorm:F4}" +
        (r.TruncatedContexts > 0 ? $"; {r.TruncatedContexts:N0} contexts cut to fit the model's window" : "");
}
