using Supercluster.Distributed;
using Supercluster.Model;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Supercluster.Parallelism;

/// <summary>
/// One stage of a pipeline-parallel model (Narayanan et al. 2021): a balanced, contiguous range of blocks, plus the
/// embedding on the first stage and the final norm, head and loss on the last. It is composed around the unchanged
/// model: built whole (same seed, same weights on every rank), then every parameter of other stages is freed, so the
/// rank holds only its stage. A table used by both ends (GPT-2's tied wte) lives on the first and the last stage.
/// Interleaved (<c>--interleave v</c>, §2.2.2): the model is cut into p·v virtual stages ("chunks") and pipeline rank r
/// holds chunks r, r + p, …, r + (v − 1)·p, one PipelineStage each (<see cref="ForRank"/>); v = 1 is the plain split.
/// </summary>
public sealed class PipelineStage
{
    /// <param name="pp">The pipeline group: this rank's stage is its rank there, the stage count its size.</param>
    /// <param name="parallel">The model after <see cref="Parallelize.Apply"/> when each stage is also tensor or context
    /// parallel (its TP × CP ranks run the stage; activations go between ranks of the same TP and CP rank): the last
    /// stage's loss is then vocabulary-parallel, attention reads the CP context. Null: the stage runs whole on this rank.</param>
    public PipelineStage(CausalLM model, ICommunicator pp, ParallelModel? parallel = null) : this(model, pp, parallel, 1, 0, null) => FreeOthers();

    PipelineStage(CausalLM model, ICommunicator pp, ParallelModel? parallel, int interleave, int chunk, IReadOnlyList<(string Name, long[] Shape)>? layout)
    {
        Model = model;
        Pp = pp;
        Parallel = parallel;
        Rank = pp.Rank;
        Ranks = pp.WorldSize;
        Interleave = interleave;
        Chunk = chunk;
        Stage = chunk * Ranks + Rank;
        Stages = Ranks * interleave;
        Validate(Ranks, model.Config.NLayer, interleave);
        (FirstLayer, EndLayer) = Split(model.Config.NLayer, Stages)[Stage];
        Layout = layout ?? [.. model.named_parameters().Select(p => (p.name, p.parameter.shape))];
        Tied = model.EmbeddingParameters.Intersect(model.HeadParameters).SingleOrDefault();
        _mine = NamesOfRank(model, Rank, Ranks, interleave).ToHashSet();
    }

    /// <summary>This rank's <paramref name="interleave"/> chunks (virtual stages r, r + p, …), in chunk order; every other parameter is freed.</summary>
    public static IReadOnlyList<PipelineStage> ForRank(CausalLM model, ICommunicator pp, ParallelModel? parallel, int interleave)
    {
        var first = new PipelineStage(model, pp, parallel, interleave, 0, null);
        PipelineStage[] chunks = [first, .. Enumerable.Range(1, interleave - 1).Select(c => new PipelineStage(model, pp, parallel, interleave, c, first.Layout))];
        first.FreeOthers();
        return chunks;
    }

    void FreeOthers()
    {
        using var _ = no_grad();
        foreach (var (name, p) in Model.named_parameters())
            if (!_mine.Contains(name)) p.set_(empty(0, dtype: p.dtype, device: p.device));   // frees this rank's copy
    }

    readonly HashSet<string> _mine;

    public CausalLM Model { get; }
    public ICommunicator Pp { get; }
    public ParallelModel? Parallel { get; }
    /// <summary>This chunk's virtual stage (chunk·p + rank; the rank when not interleaved) and the number of virtual stages (p·v).</summary>
    public int Stage { get; }
    public int Stages { get; }
    /// <summary>This rank in the pipeline group and the group's size p.</summary>
    public int Rank { get; }
    public int Ranks { get; }
    /// <summary>Chunks per rank (v) and which of this rank's chunks this is.</summary>
    public int Interleave { get; }
    public int Chunk { get; }
    /// <summary>This stage's blocks: FirstLayer … EndLayer−1.</summary>
    public int FirstLayer { get; }
    public int EndLayer { get; }
    /// <summary>Whether this chunk runs the embedding (virtual stage 0) or the head and loss (the last virtual stage).</summary>
    public bool IsFirst => Stage == 0;
    public bool IsLast => Stage == Stages - 1;
    /// <summary>Every parameter of the whole model (name, shape) in the model's order: the layout of checkpoints.</summary>
    public IReadOnlyList<(string Name, long[] Shape)> Layout { get; }
    /// <summary>The parameter both ends use (GPT-2's wte.weight: embedding and tied head), or null.</summary>
    public string? Tied { get; }
    /// <summary>Whether this rank holds a copy of the tied table whose gradient it sums with the other end's (the first rank embeds, the last runs the head).</summary>
    public bool HoldsTied => Tied is not null && Ranks > 1 && (Rank == 0 || Rank == Ranks - 1);

    /// <summary>This rank's parameters (all its chunks) in the model's order (read again each time: a dtype conversion replaces them).</summary>
    public IEnumerable<(string name, Parameter parameter)> NamedParameters() => Model.named_parameters().Where(p => _mine.Contains(p.name));

    /// <summary>The parameters stage <paramref name="stage"/> of <paramref name="stages"/> holds, in the model's order.</summary>
    public static IEnumerable<string> NamesOf(CausalLM model, int stage, int stages)
    {
        var (first, end) = Split(model.Config.NLayer, stages)[stage];
        foreach (var (name, _) in model.named_parameters())
        {
            int layer = model.LayerOf(name);
            if (layer >= 0 ? layer >= first && layer < end
                : (stage == 0 && model.EmbeddingParameters.Contains(name)) || (stage == stages - 1 && model.HeadParameters.Contains(name)))
                yield return name;
        }
    }

    /// <summary>The parameters pipeline rank <paramref name="rank"/> of <paramref name="ranks"/> holds with <paramref name="interleave"/> chunks each, in the model's order.</summary>
    public static IEnumerable<string> NamesOfRank(CausalLM model, int rank, int ranks, int interleave)
    {
        var names = Enumerable.Range(0, interleave).SelectMany(c => NamesOf(model, c * ranks + rank, ranks * interleave)).ToHashSet();
        return model.named_parameters().Select(p => p.name).Where(names.Contains);
    }

    /// <summary>
    /// Balanced blocks per stage: n_layer/p each, the remainder one more each on the middle stages first (the ends also
    /// run the embedding and the head), as evenly as integers allow.
    /// </summary>
    public static (int First, int End)[] Split(int nLayer, int stages)
    {
        var count = Enumerable.Repeat(nLayer / stages, stages).ToArray();
        int extra = nLayer % stages;
        // Middle stages first (from the centre outwards), then the ends.
        var order = Enumerable.Range(0, stages).OrderBy(s => s == 0 || s == stages - 1 ? 1 : 0).ThenBy(s => Math.Abs(2 * s - (stages - 1))).ToArray();
        for (int i = 0; i < extra; i++) count[order[i]]++;
        var ranges = new (int, int)[stages];
        for (int s = 0, at = 0; s < stages; at += count[s], s++) ranges[s] = (at, at + count[s]);
        return ranges;
    }

    /// <summary>Bad input: more stages than blocks; interleaved, layers not divisible into p·v equal chunks.</summary>
    public static void Validate(int stages, int nLayer, int interleave = 1)
    {
        if (interleave < 1) throw new BadInputException($"--interleave {interleave}: expected a positive integer");
        if (interleave > 1 && stages < 2)
            throw new BadInputException($"--interleave {interleave} with --pp {stages}: virtual stages are chunks of pipeline stages; expected --pp 2 or more");
        if (interleave > 1 && nLayer % (stages * interleave) != 0)
            throw new BadInputException($"--interleave {interleave} with --pp {stages}: the model's {nLayer} layers are not divisible by pp × interleave = {stages * interleave}: expected equal chunks (as Megatron-LM)");
        if (stages > nLayer)
            throw new BadInputException($"--pp {stages}: more pipeline stages than the model's {nLayer} layers; expected at most {nLayer}");
    }

    /// <summary>The split as one line: "pipeline: 4 stages; stage 0: embedding + layers 0-1, …" (interleaved: each stage's chunks).</summary>
    public static string Describe(CausalLM model, int stages, int interleave = 1)
    {
        int chunks = stages * interleave;
        var split = Split(model.Config.NLayer, chunks);
        string Part(int v) => $"{(v == 0 ? "embedding + " : "")}layers {split[v].First}-{split[v].End - 1}{(v == chunks - 1 ? " + norm, head, loss" : "")}";
        if (interleave == 1)
            return $"pipeline: {stages} stages of {model.Config.NLayer} layers; " + string.Join(", ", Enumerable.Range(0, stages).Select(s => $"stage {s}: {Part(s)}"));
        return $"pipeline: {stages} stages × {interleave} interleaved chunks of {model.Config.NLayer} layers; " + string.Join("; ", Enumerable.Range(0, stages).Select(s =>
            $"stage {s}: " + string.Join(", ", Enumerable.Range(0, interleave).Select(c => $"chunk {c * stages + s} ({Part(c * stages + s)})"))));
    }

    /// <summary>
    /// This stage's part of the forward pass: ids [B, T] on the first stage, else the previous stage's activation
    /// [B, T, d]; returns the activation [B, T, d] for the next stage, or the logits [B, T, vocab] on the last. Under
    /// context parallelism T is this rank's share and <paramref name="context"/> what attention reads (<see cref="ParallelModel.ContextOf"/>).
    /// </summary>
    public Tensor Forward(Tensor input, KvCache? context = null)
    {
        var x = IsFirst ? Model.EmbedTokens(input, context) : input;
        x = Model.RunBlocks(x, FirstLayer, EndLayer, context);
        return IsLast ? Model.NormAndHead(x) : x;
    }

    /// <summary>
    /// The last stage's mean loss of targets [B·T] from its input (the previous stage's activation): under TP the final
    /// norm's output goes into the vocabulary-parallel head and cross-entropy (<see cref="ParallelModel.HeadLoss"/>).
    /// </summary>
    public Tensor Loss(Tensor input, Tensor target, KvCache? context = null)
    {
        if (Parallel is not { IsTensorParallel: true } p)
        {
            var logits = Forward(input, context);
            return nn.functional.cross_entropy(logits.view(-1, logits.shape[2]).to(ScalarType.Float32), target);
        }
        return p.HeadLoss(Model.FinalNorm(Model.RunBlocks(input, FirstLayer, EndLayer, context)), target);
    }

    /// <summary>The shape of the activation (and of its gradient) sent between stages: [B, T, d], T this rank's share under context or sequence parallelism.</summary>
    public long[] ActivationShape(long batch, long seqLen) => [batch, Parallel?.LocalSequence(seqLen) ?? seqLen, Model.Config.NEmbd];
}
