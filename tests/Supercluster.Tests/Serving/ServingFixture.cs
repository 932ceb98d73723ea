using System.Text;
using System.Text.Json.Nodes;
using Supercluster.Checkpointing;
using Supercluster.Data;
using Supercluster.Inference;
using Supercluster.Model;
using Supercluster.Search;
using Supercluster.Server;
using Supercluster.Tokenization;
using Supercluster.Training;
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

    /// <summary>
    /// A real training run with the project's trainer on <see cref="Corpus"/> (byte tokens): config.json, metrics.jsonl,
    /// checkpoints, exactly as the dashboard meets them. Returns the final checkpoint.
    /// </summary>
    public static string TrainTinyRun(string runDir, int steps)
    {
        string data = runDir + "-data";
        Preparer.Run(Enumerable.Range(0, 40).Select(_ => new Document(Corpus)), new PrepareOptions { OutDir = data, Tokenizer = "byte", ValFraction = 0.1 });
        int threads = torch.get_num_threads();
        torch.set_num_threads(1); // tiny ops: one thread is faster than two fighting over a busy machine
        try
        {
            var result = new Trainer(new TrainOptions
            {
                DataDir = data, OutDir = runDir, Model = "tiny", NHead = Config.NHead, NEmbd = Config.NEmbd, SeqLen = Config.SeqLen,
                BatchSize = 8, Steps = steps, Lr = 1e-2, Warmup = 10, Device = "cpu", Seed = 7, EvalEvery = 50, EvalTokens = 512,
                SampleEvery = 100, SampleTokens = 24,
            }, TextWriter.Null).Run();
            var config = ModelCheckpoint.ReadConfig(result.LastCheckpoint!);
            if (config != Config) throw new InvalidOperationException($"fixture config drifted: {config.ToJson()}");
            return result.LastCheckpoint!;
        }
        finally
        {
            torch.set_num_threads(threads);
        }
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
