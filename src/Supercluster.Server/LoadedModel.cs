using System.Text;
using Supercluster.Checkpointing;
using Supercluster.Inference;
using Supercluster.Model;
using Supercluster.Runtime;
using Supercluster.Tokenization;
using TorchSharp;

namespace Supercluster.Server;

/// <summary>The model, its tokenizer, the batching scheduler and the embedder: loaded once per server.</summary>
public sealed class LoadedModel : IDisposable
{
    LoadedModel(string name, CausalLM model, TextTokenizer tokenizer, BatchScheduler scheduler, Embedder embedder, string dir, IReadOnlySet<string>? aliases = null)
    {
        Name = name; Model = model; Tokenizer = tokenizer; Scheduler = scheduler; Embedder = embedder; Dir = dir;
        Aliases = aliases ?? AliasesOf(name, dir);
    }

    /// <summary>
    /// Names a request's <c>model</c> may use (vLLM's served model names): the served name, the run's name, and the
    /// architecture preset the run was trained as (e.g. "gpt2"). Anything else is 404 model_not_found.
    /// </summary>
    public IReadOnlySet<string> Aliases { get; }

    static HashSet<string> AliasesOf(string name, string dir)
    {
        var set = new HashSet<string>(StringComparer.Ordinal) { name };
        var full = Path.GetFullPath(dir).TrimEnd('/');
        if (Path.GetDirectoryName(full) is { } parent && Path.GetFileName(parent) == "checkpoints" && Path.GetDirectoryName(parent) is { } run)
        {
            set.Add(Path.GetFileName(run));
            try
            {
                var config = Path.Combine(run, "config.json");
                if (File.Exists(config) && System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(config)) is System.Text.Json.Nodes.JsonObject o
                    && o["options"] is System.Text.Json.Nodes.JsonObject opts && opts["model"] is System.Text.Json.Nodes.JsonValue v && v.TryGetValue<string>(out var preset))
                    set.Add(preset);
            }
            catch (Exception e) when (e is IOException or System.Text.Json.JsonException) { /* no preset alias */ }
        }
        return set;
    }

    public string Name { get; }
    public CausalLM Model { get; }
    public TextTokenizer Tokenizer { get; }
    public BatchScheduler Scheduler { get; }
    public Embedder Embedder { get; }
    public string Dir { get; }
    public int Context => Model.Config.SeqLen;

    public static LoadedModel Load(ServerOptions o)
    {
        var device = DeviceSelect.Resolve(o.Device);
        var (model, tokName, dir) = ModelCheckpoint.LoadForInference(o.Checkpoint!, device);
        var tok = Tokenizers.Create(tokName);
        string name = o.ModelName ?? DefaultName(dir);
        var loaded = new LoadedModel(name, model, tok, new BatchScheduler(model, device, o.MaxBatch, o.MaxQueue, o.PrefillChunk, o.PrefixCacheBytes) { StepDelay = o.StepDelay, MixedPrefill = o.MixedPrefill }, new Embedder(model, device), dir);
        if (o.ProfileEvery is { } every) loaded.StartProfile(every);
        return loaded;
    }

    Timer? _profileTimer;

    /// <summary>Times the scheduler's phases and prints one line per window with decode steps in it (serve --profile).</summary>
    void StartProfile(TimeSpan every)
    {
        var profile = Scheduler.Profile = new SchedulerProfile();
        _profileTimer = new Timer(_ =>
        {
            var snap = profile.Take(reset: true);
            if (snap.Steps > 0) Console.Error.WriteLine($"[{DateTime.UtcNow:HH:mm:ss}] {Name}: {snap}");
        }, null, every, every);
    }

    /// <summary>
    /// <c>serve --adapter [NAME=]DIR</c>: the base checkpoint with a LoRA adapter merged into its own copy of the weights,
    /// with its own scheduler, answering to NAME only (default: the adapter run's name). A copy per adapter costs memory
    /// but keeps decoding at the base's speed and the batch scheduler unchanged (no per-request adapter math).
    /// </summary>
    public static LoadedModel LoadAdapter(ServerOptions o, string spec)
    {
        int eq = spec.IndexOf('=');
        string? name = eq > 0 ? spec[..eq] : null;
        string path = eq > 0 ? spec[(eq + 1)..] : spec;
        var device = DeviceSelect.Resolve(o.Device);
        var (baseModel, tokName, _) = ModelCheckpoint.LoadForInference(o.Checkpoint!, device);
        string dir = FineTuning.AdapterLoader.Resolve(path);
        var model = FineTuning.AdapterLoader.MergeInto(baseModel, tokName, dir);
        name ??= FineTuning.AdapterLoader.DefaultName(dir);
        return new LoadedModel(name, model, Tokenizers.Create(tokName), new BatchScheduler(model, device, o.MaxBatch, o.MaxQueue), new Embedder(model, device), dir,
            new HashSet<string>(StringComparer.Ordinal) { name });
    }

    /// <summary>"RUN/step_0000100" for a checkpoint in a run, else the directory's name.</summary>
    static string DefaultName(string dir)
    {
        var full = Path.GetFullPath(dir).TrimEnd('/');
        var leaf = Path.GetFileName(full);
        var parent = Path.GetDirectoryName(full);
        if (leaf.StartsWith("step_") && parent is not null && Path.GetFileName(parent) == "checkpoints")
            return $"{Path.GetFileName(Path.GetDirectoryName(parent))}/{leaf}";
        return leaf;
    }

    public void Dispose()
    {
        _profileTimer?.Dispose();
        Scheduler.Dispose();
        Model.Dispose();
    }
}

/// <summary>Incremental UTF-8 decoding of tokens: a token may end inside a multi-byte character.</summary>
public sealed class TokenTextDecoder(TextTokenizer tokenizer)
{
    readonly Decoder _decoder = new UTF8Encoding(false).GetDecoder();
    readonly char[] _buf = new char[4096];

    public string Add(int token)
    {
        var bytes = tokenizer.TokenBytes(token);
        if (bytes.Length > 1024) return tokenizer.Decode([token]);
        int n = _decoder.GetChars(bytes, 0, bytes.Length, _buf, 0, flush: false);
        return new string(_buf, 0, n);
    }

    public string Flush()
    {
        int n = _decoder.GetChars([], 0, 0, _buf, 0, flush: true);
        return new string(_buf, 0, n);
    }
}
