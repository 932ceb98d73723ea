using System.Text;
using System.Text.Json.Nodes;
using Supercluster.Checkpointing;
using Supercluster.Data;
using Supercluster.Inference;
using Supercluster.Model;
using Supercluster.Search;
using Supercluster.Server;
using Supercluster.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

namespace Supercluster.Tests.Serving;

[CollectionDefinition("Serving")]
public sealed class ServingCollection : ICollectionFixture<ServingFixture>;

/// <summary>
/// Trains a tiny byte-level GPT-2 on a few sentences, saves it as a run (config, metrics, checkpoint), indexes a small
/// jsonl corpus with metadata, and starts a real Kestrel server on 127.0.0.1 (free port) with model, index and runs.
/// </summary>
public sealed class ServingFixture : IAsyncLifetime
{
    public const string Corpus =
        "The state of the union is strong. We the people of the United States, in order to form a more perfect union, " +
        "establish justice, insure domestic tranquility, provide for the common defence, promote the general welfare. ";

    public static readonly (string Text, string Year, string Name)[] Docs =
    [
        ("The economy grew and jobs returned to every state of the union.", "1999", "Clinton"),
        ("Our armed forces stand ready to defend freedom across the world.", "2003", "Bush"),
        ("Health care costs must come down for working families.", "2010", "Obama"),
        ("Railroads and canals will bind the western territories to the nation.", "1830", "Jackson"),
        ("The treasury holds a surplus and the tariff should be reduced.", "1887", "Cleveland"),
    ];

    readonly TempDir _dir = new();
    public string Root => _dir.Path;
    public string RunsDir => _dir["runs"];
    public string RunDir => Path.Combine(RunsDir, "tiny-run");
    public string Checkpoint { get; private set; } = "";
    public string IndexPath => _dir["docs.index"];
    public SuperclusterServer Server { get; private set; } = null!;
    public HttpClient Http { get; private set; } = null!;
    public static ModelConfig Config => TorchSetup.TinyGpt2(vocab: 257, ctx: 64) with { NEmbd = 32, NHead = 4, NKvHead = 4, FfnHidden = 128 };

    public async Task InitializeAsync()
    {
        TorchSetup.Init();
        var t0 = System.Diagnostics.Stopwatch.GetTimestamp();
        Checkpoint = TrainTinyRun(RunDir, steps: 300);
        Console.WriteLine($"[fixture] trained in {System.Diagnostics.Stopwatch.GetElapsedTime(t0).TotalSeconds:F1} s");
        File.WriteAllLines(_dir["docs.jsonl"], Docs.Select(d => new JsonObject { ["text"] = d.Text, ["year"] = d.Year, ["name"] = d.Name }.ToJsonString()));
        var (model, tok, _) = ModelCheckpoint.LoadForInference(Checkpoint, CPU);
        using (model)
            IndexBuilder.Build(CorpusReader.Read([_dir["docs.jsonl"]]), new Embedder(model, CPU), Tokenizers.Create(tok), 0, Checkpoint).Write(IndexPath);
        Server = await SuperclusterServer.StartAsync(new ServerOptions { Checkpoint = Checkpoint, Index = IndexPath, RunsDir = RunsDir, Port = 0 });
        Http = new HttpClient { BaseAddress = new Uri(Server.Url), Timeout = TimeSpan.FromSeconds(60) };
    }

    /// <summary>Trains for <paramref name="steps"/> steps on <see cref="Corpus"/>; writes config.json, metrics.jsonl and one checkpoint.</summary>
    public static string TrainTinyRun(string runDir, int steps)
    {
        Directory.CreateDirectory(runDir);
        var config = Config;
        int threads = torch.get_num_threads();
        torch.set_num_threads(1); // tiny ops: one thread is faster than two fighting over a busy machine
        using var model = CausalLM.Create(config, seed: 7);
        model.train();
        using var opt = optim.AdamW(model.parameters(), lr: 1e-2); // libtorch's own: independent of the trainer's optimizer
        var bytes = Encoding.UTF8.GetBytes(Corpus).Select(b => (long)b).ToArray();
        var rng = new Random(1);
        var metrics = new StringBuilder();
        int t = config.SeqLen;
        for (int step = 1; step <= steps; step++)
        {
            using var scope = NewDisposeScope();
            var x = new long[8 * t]; var y = new long[8 * t];
            for (int b = 0; b < 8; b++)
            {
                int s = rng.Next(bytes.Length - t - 1);
                Array.Copy(bytes, s, x, b * t, t); Array.Copy(bytes, s + 1, y, b * t, t);
            }
            var logits = model.forward(tensor(x).view(8, t));
            var loss = nn.functional.cross_entropy(logits.view(-1, config.VocabSize), tensor(y));
            opt.zero_grad();
            loss.backward();
            opt.step();
            metrics.AppendLine(new JsonObject
            {
                ["type"] = "train", ["step"] = step, ["loss"] = loss.item<float>(), ["lr"] = 3e-3, ["grad_norm"] = 1.0, ["tokens"] = step * 8 * t,
                ["tokens_per_s"] = 1000.0 + step, ["step_ms"] = 5.0, ["mfu"] = null, ["time_s"] = step * 0.01,
            }.ToJsonString());
            if (step % 50 == 0) metrics.AppendLine(new JsonObject { ["type"] = "eval", ["step"] = step, ["val_loss"] = loss.item<float>() + 0.1, ["time_s"] = step * 0.01 }.ToJsonString());
        }
        model.eval();
        torch.set_num_threads(threads);

        File.WriteAllText(Path.Combine(runDir, "config.json"), new JsonObject
        {
            ["options"] = new JsonObject { ["steps"] = steps, ["model"] = "tiny", ["lr"] = 3e-3 },
            ["model"] = JsonNode.Parse(config.ToJson()), ["seq_len"] = t,
        }.ToJsonString());
        File.WriteAllText(Path.Combine(runDir, "metrics.jsonl"), metrics.ToString());
        return new CheckpointStore(runDir).Save(steps, d => ModelCheckpoint.WriteModel(d, model, "byte"));
    }

    /// <summary>Another server on the same checkpoint with other options (limits, keys).</summary>
    public Task<SuperclusterServer> StartExtraAsync(ServerOptions o) => SuperclusterServer.StartAsync(o with { Checkpoint = Checkpoint, Port = 0 });

    public async Task DisposeAsync()
    {
        Http.Dispose();
        await Server.DisposeAsync();
        _dir.Dispose();
    }
}
