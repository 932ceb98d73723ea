using System.Text.Json.Nodes;
using Supercluster.Checkpointing;
using Supercluster.Cli.Commands;
using Supercluster.Evaluation;
using Supercluster.Model;
using Supercluster.Tokenization;
using Supercluster.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Supercluster.Tests.Evaluation;

/// <summary>
/// Multiple-choice scoring: a trained model prefers the true continuation (in <c>train --eval-task</c>'s metrics and in
/// <c>eval --task</c>), the likelihood arithmetic equals log_softmax of the model's logits, HellaSwag's published fields
/// map to context/endings/label, and bad task files are one line naming file, line and field.
/// </summary>
[Collection("Console")]
public class TaskEvalTests : IClassFixture<TaskEvalFixture>
{
    readonly TaskEvalFixture _f;

    public TaskEvalTests(TaskEvalFixture f)
    {
        TorchSetup.Init();
        _f = f;
    }

    static (int Code, string Out, string Err) Run(params string[] args) =>
        InProcessCli.Run([TrainCommand.Create(), EvalCommand.Create()], args);

    [Fact]
    public void A_model_trained_on_a_text_prefers_its_true_continuation_in_train_and_eval()
    {
        // train --eval-task: one task_eval record per evaluation (every 50 steps and the last), the last one all right.
        // Two files (comma-separated), the second in HellaSwag's layout: the same questions, the same scores.
        var records = MetricsLog.Read(Path.Combine(_f.RunDir, "metrics.jsonl")).Where(r => (string?)r["type"] == "task_eval").ToList();
        Assert.Equal([TaskEvalFixture.EvalEvery, TaskEvalFixture.EvalEvery, TaskEvalFixture.Steps, TaskEvalFixture.Steps], records.Select(r => (long)r["step"]!));
        Assert.Equal(["construct", "construct-hs", "construct", "construct-hs"], records.Select(r => (string?)r["task"]));
        foreach (var last in records.TakeLast(2))
        {
            Assert.Equal(TaskEvalFixture.Questions.Length, (int)last["count"]!);
            Assert.Equal(1.0, (double)last["acc"]!);
            Assert.Equal(1.0, (double)last["acc_norm"]!);
        }
        Assert.Equal((double)records[0]["acc_norm"]!, (double)records[1]["acc_norm"]!);

        // eval --task --json on the checkpoint: the same numbers, and the untrained (seeded init) model is not perfect,
        // so the construction is what the trained model learnt.
        var (code, output, err) = Run("eval", "--checkpoint", _f.RunDir, "--task", _f.TaskFile, "--device", "cpu", "--json");
        Assert.True(code == 0, err);
        var task = JsonNode.Parse(output)!["tasks"]![0]!;
        Assert.Equal(1.0, (double)task["acc"]!);
        Assert.Equal(1.0, (double)task["acc_norm"]!);
        (code, output, err) = Run("eval", "--checkpoint", _f.RunDir, "--task", _f.TaskFile, "--device", "cpu");
        Assert.True(code == 0, err);
        Assert.Matches(@"construct\.jsonl: 5 questions \(generic\), acc 1\.0000, acc_norm 1\.0000", output);

        var (model, tok, _) = ModelCheckpoint.LoadForInference(_f.Checkpoint, CPU);
        using (model)
        using (var fresh = CausalLM.Create(model.Config, seed: 3))
        {
            var (untrained, _) = TaskEval.Evaluate(fresh, Tokenizers.Create(tok), TaskSet.Load(_f.TaskFile), 8, CPU);
            Assert.True(untrained.Correct < untrained.Count, "an untrained model got every question right: the set does not test learning");
        }
    }

    public static TheoryData<string> Families => new() { "gpt2", "llama" };

    [Theory]
    [MemberData(nameof(Families))]
    public void Ending_losses_are_sums_and_means_of_log_softmax_over_the_ending_tokens(string family)
    {
        // Random weights: the arithmetic, not the model, is under test. Byte tokens; context 32.
        var config = family == "gpt2" ? TorchSetup.TinyGpt2(vocab: 257, ctx: 32) : TorchSetup.TinyLlama(vocab: 257, ctx: 32);
        using var model = CausalLM.Create(config, seed: 11);
        var tok = Tokenizers.Create("byte");
        var examples = new[]
        {
            new TaskExample("Once upon a time", ["there was a fox", "x", "the end"], 2, 1),
            new TaskExample("", ["empty context", "starts from end-of-text"], 0, 2),
            new TaskExample("a context far longer than the model's window of thirty-two tokens", ["ends", "here now"], 1, 3),
        };
        var set = new TaskSet("mem.jsonl", "mem", examples, new Dictionary<string, int> { ["generic"] = 3 });
        var (result, scores) = TaskEval.Evaluate(model, tok, set, batchRows: 4, CPU);
        Assert.Equal(1, result.TruncatedContexts);

        for (int e = 0; e < examples.Length; e++)
        {
            var ex = examples[e];
            int[] ctx = ex.Context.Length == 0 ? [tok.EotToken] : tok.Encode(ex.Context);
            var rows = ex.Endings.Select(end => (Ctx: ctx, End: tok.Encode(" " + end))).ToList();
            // (1) The same padded batch as the scorer's forward, log_softmax by hand in float64: the arithmetic alone.
            // Both read the same fp32 logits; float64 vs the scorer's fp32 log_softmax differ by ~1e-7 per token.
            var full = rows.Select(r => LastTokens([.. r.Ctx, .. r.End], config.SeqLen + 1)).ToList();
            int len = full.Max(t => t.Length) - 1;
            var input = new long[full.Count * len];
            for (int i = 0; i < full.Count; i++) for (int p = 0; p < full[i].Length - 1; p++) input[i * len + p] = full[i][p];
            double[,] logp;
            using (no_grad())
            {
                var lp = nn.functional.log_softmax(model.forward(tensor(input, [full.Count, len])).to(ScalarType.Float64), -1);
                logp = new double[full.Count * len, config.VocabSize];
                var flat = lp.reshape(-1).data<double>().ToArray();
                for (int i = 0; i < full.Count * len; i++) for (int v = 0; v < config.VocabSize; v++) logp[i, v] = flat[i * config.VocabSize + v];
            }
            var sums = new double[full.Count];
            for (int i = 0; i < full.Count; i++)
            {
                int n = rows[i].End.Length, from = full[i].Length - n;
                double sum = 0;
                for (int p = from; p < full[i].Length; p++) sum -= logp[i * len + p - 1, full[i][p]];
                sums[i] = sum;
                Assert.Equal(n, scores[e].Endings[i].Tokens);
                Assert.True(Math.Abs(sum - scores[e].Endings[i].SumNats) <= 1e-6 * Math.Max(1, Math.Abs(sum)), $"{family} q{e} ending {i}: sum {scores[e].Endings[i].SumNats} vs log_softmax {sum}");
                Assert.True(Math.Abs(sum / n - scores[e].Endings[i].MeanNats) <= 1e-6 * Math.Max(1, Math.Abs(sum / n)), $"{family} q{e} ending {i}: mean");
            }
            // acc from the argmin of sums, acc_norm from the argmin of means.
            Assert.Equal(Array.IndexOf(sums, sums.Min()), scores[e].Pred);
            var means = sums.Select((s, i) => s / rows[i].End.Length).ToArray();
            Assert.Equal(Array.IndexOf(means, means.Min()), scores[e].PredNorm);

            // (2) Padding and batching change nothing but the tensor shape: each row alone, unpadded, agrees to fp32 precision
            // of a different-shaped forward (1e-5 relative).
            for (int i = 0; i < full.Count; i++)
            {
                var alone = LikelihoodScorer.Score(model, [[new ScoredRow(full[i], full[i].Length - rows[i].End.Length)]], 1, CPU)[0][0];
                Assert.True(Math.Abs(alone.SumNats - sums[i]) <= 1e-5 * Math.Max(1, Math.Abs(sums[i])), $"{family} q{e} ending {i}: alone {alone.SumNats} vs batched {sums[i]}");
            }
        }
        Assert.Equal(scores.Count(s => s.Pred == s.Example.Label), result.Correct);
        Assert.Equal(scores.Count(s => s.PredNorm == s.Example.Label), result.CorrectNorm);
    }

    static int[] LastTokens(int[] t, int n) => t.Length > n ? t[^n..] : t;

    [Fact]
    public void HellaSwag_as_published_maps_ctx_endings_and_label()
    {
        using var dir = new TempDir();
        // Lines in the published layout (rowanz/hellaswag data/hellaswag_val.jsonl), written by hand; the third without
        // ctx (ctx_a + " " + ctx_b), the fourth with the Hugging Face copy's string label, the fifth ctx_b empty.
        File.WriteAllLines(dir["hs.jsonl"],
        [
            """{"ind": 24, "activity_label": "Roof shingle removal", "ctx_a": "A man is sitting on a roof.", "ctx_b": "he", "ctx": "A man is sitting on a roof. he", "split": "val", "split_type": "indomain", "label": 3, "endings": ["is using wrap to wrap a pair of skis.", "is ripping level tiles off.", "is holding a rubik's cube.", "starts pulling up roofing on a roof."], "source_id": "activitynet~v_-JhWjGDPHMY"}""",
            "",
            """{"ind": 92, "activity_label": "Clean and jerk", "ctx_a": "A lady walks to a barbell.", "ctx_b": "she", "split": "val", "split_type": "zeroshot", "label": 0, "endings": ["bends down and grabs the pole.", "swings and lands in her arms.", "pulls the barbell forward.", "pulls a rope attached to the barbell."], "source_id": "activitynet~v_-lJS58hyo1c"}""",
            """{"ind": "106", "activity_label": "Canoeing", "ctx_a": "Two women in a child are shown in a canoe while a man pulls the canoe while standing in the water, with other individuals visible in the background.", "ctx_b": "the child and a different man", "ctx": "Two women in a child are shown in a canoe while a man pulls the canoe while standing in the water, with other individuals visible in the background. the child and a different man", "split": "val", "split_type": "indomain", "label": "2", "endings": ["are then shown paddling down a river in a boat while a woman talks.", "are driving the canoe, they go down the river flowing side to side.", "sit in a canoe while the man paddles.", "walking go down the rapids, while the man in his helicopter almost falls and goes out of canoehood."], "source_id": "activitynet~v_-xQvJmC2jhk"}""",
            """{"ind": 7, "activity_label": "Home and Garden", "ctx_a": "[header] How to grow a lemon tree", "ctx_b": "", "label": 1, "endings": ["a", "b", "c", "d"], "split": "val", "split_type": "zeroshot", "source_id": "wikihow~1"}""",
        ]);
        var set = TaskSet.Load(dir["hs.jsonl"]);
        Assert.Equal("hs", set.Name);
        Assert.Equal(4, set.Examples.Count);
        Assert.Equal(4, set.Formats["hellaswag"]);
        Assert.Equal(new TaskExample("A man is sitting on a roof. he", set.Examples[0].Endings, 3, 1), set.Examples[0]);
        Assert.Equal("starts pulling up roofing on a roof.", set.Examples[0].Endings[3]);
        Assert.Equal(("A lady walks to a barbell. she", 0, 3), (set.Examples[1].Context, set.Examples[1].Label, set.Examples[1].Line));
        Assert.Equal(2, set.Examples[2].Label);
        Assert.EndsWith("in the background. the child and a different man", set.Examples[2].Context);
        Assert.Equal("[header] How to grow a lemon tree", set.Examples[3].Context);
        Assert.Equal(2, TaskSet.Load(dir["hs.jsonl"], limit: 2).Examples.Count);

        // Rendering as llm.c: context tokens, then the tokens of " " + ending; scored from the first ending token.
        var tok = Tokenizers.Create("byte");
        var rows = TaskEval.Render(set.Examples[0], tok, modelContext: 1024, "hs.jsonl", out bool cut);
        Assert.False(cut);
        Assert.Equal(4, rows.Count);
        Assert.Equal([.. tok.Encode("A man is sitting on a roof. he"), .. tok.Encode(" is holding a rubik's cube.")], rows[2].Tokens);
        Assert.Equal("A man is sitting on a roof. he".Length, rows[2].From);
    }

    public static TheoryData<string, string, string> BadTaskFiles => new()
    {
        { "not json", "{\"context\": \"a\", \"endings\": [\"b\", \"c\"], \"label\": 0}\nthis is not json", ":2: not JSON" },
        { "array", "[1, 2]", ":1: expected a JSON object" },
        { "no context", "{\"endings\": [\"b\", \"c\"], \"label\": 0}", ":1: field 'context' is missing" },
        { "no endings", "{\"context\": \"a\", \"label\": 0}", ":1: field 'endings' is missing" },
        { "empty endings", "{\"context\": \"a\", \"endings\": [], \"label\": 0}", ":1: field 'endings' has 0 endings" },
        { "blank ending", "{\"context\": \"a\", \"endings\": [\"b\", \"  \"], \"label\": 0}", ":1: field 'endings[1]' must be a non-empty string" },
        { "no label", "{\"context\": \"a\", \"endings\": [\"b\", \"c\"]}", ":1: field 'label' is missing" },
        { "label out of range", "\n{\"context\": \"a\", \"endings\": [\"b\", \"c\"], \"label\": 2}", ":2: field 'label' = 2 is out of range: 2 endings, expected 0..1" },
        { "negative label", "{\"context\": \"a\", \"endings\": [\"b\", \"c\"], \"label\": -1}", ":1: field 'label' = -1 is out of range" },
        { "label not a number", "{\"context\": \"a\", \"endings\": [\"b\", \"c\"], \"label\": \"b\"}", ":1: field 'label' = \"b\", expected an integer" },
        { "hellaswag test split", "{\"ctx\": \"a\", \"endings\": [\"b\", \"c\", \"d\", \"e\"], \"split\": \"test\"}", ":1: field 'label' is missing (HellaSwag's test split has no labels" },
        { "ctx not a string", "{\"ctx\": 3, \"endings\": [\"b\", \"c\"], \"label\": 0}", ":1: field 'ctx' must be a string" },
        { "empty file", "\n\n", ": no questions" },
    };

    [Theory]
    [MemberData(nameof(BadTaskFiles))]
    public void Bad_task_files_are_one_line_naming_file_line_and_field_and_exit_2(string why, string content, string message)
    {
        using var dir = new TempDir();
        File.WriteAllText(dir["bad.jsonl"], content);
        // eval: refused before any model is loaded (the checkpoint does not even exist).
        var (code, output, err) = Run("eval", "--checkpoint", dir["none"], "--task", dir["bad.jsonl"], "--device", "cpu");
        Assert.True(code == 2, $"{why}: exit {code}\n{output}{err}");
        Assert.Contains(dir["bad.jsonl"] + message, err);
        Assert.Single(err.Trim().Split('\n'));
        // train --eval-task: refused before the run directory is created.
        (code, output, err) = Run("train", "--data", _f.DataDir, "--out", dir["run"], "--model", "tiny", "--steps", "1", "--device", "cpu", "--eval-task", dir["bad.jsonl"]);
        Assert.True(code == 2, $"{why} (train): exit {code}\n{output}{err}");
        Assert.Contains(dir["bad.jsonl"] + message, err);
        Assert.False(Directory.Exists(dir["run"]), "train wrote a run directory for a bad task file");
    }

    [Fact]
    public void Missing_files_endings_longer_than_the_window_and_no_input_are_refused()
    {
        using var dir = new TempDir();
        var (code, _, err) = Run("eval", "--checkpoint", _f.RunDir, "--task", dir["missing.jsonl"]);
        Assert.Equal(2, code);
        Assert.Contains($"task file '{dir["missing.jsonl"]}' does not exist", err);
        (code, _, err) = Run("eval", "--checkpoint", _f.RunDir);
        Assert.Equal(2, code);
        Assert.Contains("eval needs --data DIR (validation loss), --task FILE (multiple choice) or --bpb FILE (bits per byte)", err);
        // The fixture's model has a 64-token window: a 70-byte ending (71 tokens with the space) cannot be scored.
        File.WriteAllText(dir["long.jsonl"], new JsonObject { ["context"] = "a", ["endings"] = new JsonArray("b", new string('x', 70)), ["label"] = 0 }.ToJsonString());
        (code, _, err) = Run("eval", "--checkpoint", _f.RunDir, "--task", dir["long.jsonl"], "--device", "cpu");
        Assert.Equal(2, code);
        Assert.Contains(":1: field 'endings[1]' is 71 tokens; the model's context of 64 tokens scores at most 64", err);
    }
}
