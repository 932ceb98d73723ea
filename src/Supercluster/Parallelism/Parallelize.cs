using Supercluster.Distributed;
using Supercluster.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace Supercluster.Parallelism;

/// <summary>What <c>train</c> asked for besides the grid.</summary>
public sealed record ParallelizeOptions(bool SequenceParallel = false);

/// <summary>
/// The one step that applies model parallelism around a model (torchtitan's <c>parallelize</c>): given the full,
/// seeded model and the rank grid it shards the model's own modules in place (tensor, vocabulary and sequence
/// parallelism) and returns a <see cref="ParallelModel"/>: the loss the step computes, which gradients need summing
/// over TP, how the gradient norm counts replicated parameters, and how full tensors are gathered and re-sharded for
/// checkpoints. Gpt2.cs and Llama.cs know nothing of it.
/// </summary>
public static class Parallelize
{
    /// <summary>Bad-input checks of a layout against a model: one line naming the flag, the value and what was expected.</summary>
    public static void Validate(ModelConfig c, ParallelDims d, bool sequenceParallel, int seqLen)
    {
        int t = d.Tp;
        if (d.Cp > 1 && seqLen % (2 * d.Cp) != 0)
            throw new BadInputException($"--cp {d.Cp}: --seq-len {seqLen} is not divisible by 2 × cp = {2 * d.Cp}: expected a multiple (each rank holds two chunks of the sequence)");
        if (sequenceParallel && t == 1)
            throw new BadInputException("--sequence-parallel needs --tp > 1: it splits the regions between tensor-parallel layers over the TP ranks");
        if (t == 1) return;
        if (c.NHead % t != 0) throw new BadInputException($"--tp {t}: n_head {c.NHead} is not divisible by {t}: expected a divisor of the head count (heads are split across TP ranks)");
        if (c.NKvHead % t != 0) throw new BadInputException($"--tp {t}: n_kv_head {c.NKvHead} is not divisible by {t}: expected a divisor of the key/value head count");
        if (c.FfnHidden % t != 0) throw new BadInputException($"--tp {t}: ffn_hidden {c.FfnHidden} is not divisible by {t}: expected a divisor of the MLP width");
        if (c.PaddedVocab % t != 0) throw new BadInputException($"--tp {t}: the vocabulary tables have {c.PaddedVocab} rows, not divisible by {t}: expected --pad-vocab a multiple of {t}");
        if (sequenceParallel && seqLen % t != 0) throw new BadInputException($"--sequence-parallel with --tp {t}: --seq-len {seqLen} is not divisible by {t}: expected a multiple of the TP size");
    }

    /// <summary>Vocabulary padding for a layout: a multiple of <paramref name="requested"/> and of the TP size (Megatron pads the same way).</summary>
    public static int PadVocabMultiple(int requested, int tp) => requested / Gcd(requested, tp) * tp;

    static int Gcd(int a, int b) => b == 0 ? a : Gcd(b, a % b);

    public static ParallelModel Apply(CausalLM model, RankGrid grid, ParallelizeOptions options)
    {
        var fullShapes = model.named_parameters().Select(p => (p.name, p.parameter.shape)).ToList();
        var shards = new Dictionary<string, TpShard>();
        var sequenceParallelParameters = new HashSet<string>();
        if (grid.Dims.Tp > 1)
        {
            var tp = grid.Tp;
            bool sp = options.SequenceParallel;
            switch (model)
            {
                case Gpt2 g:
                    for (int i = 0; i < g.h.Count; i++)
                    {
                        var b = g.h[i];
                        string n = $"h.{i}";
                        TensorParallel.EnterAfter(b.ln_1, tp, sp);
                        TensorParallel.ColumnParallel(b.attn.c_attn, tp, 3, shards, $"{n}.attn.c_attn");
                        TensorParallel.RowParallel(b.attn.c_proj, tp, sp, shards, $"{n}.attn.c_proj");
                        TensorParallel.EnterAfter(b.ln_2, tp, sp);
                        var mlp = b.mlp!;                                   // dense: MoE with TP is refused by Trainer
                        TensorParallel.ColumnParallel(mlp.c_fc, tp, 1, shards, $"{n}.mlp.c_fc");
                        TensorParallel.RowParallel(mlp.c_proj, tp, sp, shards, $"{n}.mlp.c_proj");
                        sequenceParallelParameters.UnionWith([$"{n}.ln_1.weight", $"{n}.ln_1.bias", $"{n}.ln_2.weight", $"{n}.ln_2.bias"]);
                    }
                    VocabParallel.Embedding(g.wte, tp, sp, shards, "wte.weight");   // also the head: tied, the same shard
                    if (sp) SequenceParallel.SplitOutput(g.wpe, tp);
                    sequenceParallelParameters.UnionWith(["ln_f.weight", "ln_f.bias", "wpe.weight"]);
                    break;
                case Llama l:
                    for (int i = 0; i < l.layers.Count; i++)
                    {
                        var b = l.layers[i];
                        string n = $"layers.{i}";
                        TensorParallel.EnterAfter(b.input_layernorm, tp, sp);
                        TensorParallel.ColumnParallel(b.self_attn.q_proj, tp, 1, shards, $"{n}.self_attn.q_proj");
                        TensorParallel.ColumnParallel(b.self_attn.k_proj, tp, 1, shards, $"{n}.self_attn.k_proj");
                        TensorParallel.ColumnParallel(b.self_attn.v_proj, tp, 1, shards, $"{n}.self_attn.v_proj");
                        TensorParallel.RowParallel(b.self_attn.o_proj, tp, sp, shards, $"{n}.self_attn.o_proj");
                        TensorParallel.EnterAfter(b.post_attention_layernorm, tp, sp);
                        var mlp = b.mlp!;                                   // dense: MoE with TP is refused by Trainer
                        TensorParallel.ColumnParallel(mlp.gate_proj, tp, 1, shards, $"{n}.mlp.gate_proj");
                        TensorParallel.ColumnParallel(mlp.up_proj, tp, 1, shards, $"{n}.mlp.up_proj");
                        TensorParallel.RowParallel(mlp.down_proj, tp, sp, shards, $"{n}.mlp.down_proj");
                        sequenceParallelParameters.UnionWith([$"{n}.input_layernorm.weight", $"{n}.post_attention_layernorm.weight"]);
                    }
                    VocabParallel.Embedding(l.embed_tokens, tp, sp, shards, "embed_tokens.weight");
                    TensorParallel.ColumnParallel(l.lm_head, tp, 1, shards, "lm_head");              // vocabulary rows; used by the loss
                    sequenceParallelParameters.Add("norm.weight");
                    break;
                default:
                    throw new BadInputException($"--tp {grid.Dims.Tp}: no tensor-parallel plan for {model.GetType().Name}");
            }
            if (!sp) sequenceParallelParameters.Clear();
        }
        return new ParallelModel(model, grid, options, fullShapes, shards, sequenceParallelParameters);
    }
}

/// <summary>A model after <see cref="Parallelize.Apply"/>: what the step, the gradient norm and checkpoints need to know.</summary>
public sealed class ParallelModel
{
    readonly CausalLM _model;
    readonly IReadOnlyDictionary<string, TpShard> _shards;
    readonly string _head;

    internal ParallelModel(CausalLM model, RankGrid grid, ParallelizeOptions options, IReadOnlyList<(string Name, long[] Shape)> fullShapes,
        IReadOnlyDictionary<string, TpShard> shards, IReadOnlySet<string> sequenceParallelParameters)
    {
        _model = model;
        Grid = grid;
        Options = options;
        FullShapes = fullShapes;
        _shards = shards;
        SequenceParallelParameters = sequenceParallelParameters;
        _head = model.VocabTables[^1];   // GPT-2: the tied wte; Llama: lm_head
    }

    public RankGrid Grid { get; }
    public ParallelizeOptions Options { get; }
    /// <summary>The model, its modules sharded in place.</summary>
    public CausalLM Model => _model;
    /// <summary>Every parameter's name and full (unsharded) shape, in the model's order.</summary>
    public IReadOnlyList<(string Name, long[] Shape)> FullShapes { get; }
    /// <summary>Parameters used on a sequence shard under sequence parallelism: their gradients are summed over TP.</summary>
    public IReadOnlySet<string> SequenceParallelParameters { get; }
    public bool IsTensorParallel => Grid.Dims.Tp > 1;
    /// <summary>Whether the step needs <see cref="Loss"/> (tensor or context parallelism) instead of the model's plain loss.</summary>
    public bool OwnsLoss => Grid.Dims.Tp > 1 || Grid.Dims.Cp > 1;

    ContextParallel? _context;
    /// <summary>One context per sequence length (positions and mask made once, kept for the backward passes).</summary>
    ContextParallel Context(long seqLen, Device device)
    {
        if (_context is { } c && c.Capacity == seqLen) return c;
        _context?.Dispose();
        return _context = new ContextParallel(Grid.Cp, seqLen, device);
    }
    /// <summary>Whether a rank holds only part of the model (TP shards or PP stages): checkpoints then store optimizer state by name.</summary>
    public bool SplitsParameters => Grid.Dims.Tp > 1 || Grid.Dims.Pp > 1;

    /// <summary>The sequence length of activations between layers: each CP rank holds 1/C of it, and under sequence parallelism each TP rank 1/T of that.</summary>
    public long LocalSequence(long seqLen) => seqLen / Grid.Dims.Cp / (Options.SequenceParallel ? Grid.Dims.Tp : 1);

    /// <summary>Under context parallelism, what attention reads for sequences of <paramref name="seqLen"/> tokens (<see cref="ContextParallel"/>); else null.</summary>
    public KvCache? ContextOf(long seqLen, Device device) => Grid.Dims.Cp > 1 ? Context(seqLen, device) : null;

    /// <summary>This rank's tokens of a [B, T] batch (ids or targets) under context parallelism: its two chunks, [B, T/C]; else the batch.</summary>
    public Tensor LocalTokens(Tensor batch, KvCache? context) =>
        context is null ? batch : batch.index_select(1, context.Positions(batch.shape[1] / Grid.Dims.Cp)[0]);

    /// <summary>Where gradients are averaged: the ranks holding the same parameters (DP × CP).</summary>
    public ICommunicator DataParallel => Grid.DpCp;

    /// <summary>Whether <paramref name="name"/> is split over TP (else every TP rank holds all of it).</summary>
    public bool IsSharded(string name) => _shards.ContainsKey(name);

    /// <summary>
    /// The training loss of ids [B, T] → targets [B·T]: one rank's plain loss, or under TP the final hidden states
    /// through this rank's vocabulary rows of the head into the vocabulary-parallel cross-entropy ([B, T, V/T] logits).
    /// </summary>
    public Tensor Loss(Tensor input, Tensor target)
    {
        // Context parallelism: this rank's two chunks of every sequence, attending over the gathered keys (ContextParallel).
        var context = ContextOf(input.shape[1], input.device);
        if (context is not null)
        {
            target = LocalTokens(target.view(input.shape[0], -1), context).reshape(-1);
            input = LocalTokens(input, context);                                                              // [B, T/C]
        }
        if (!IsTensorParallel) return Training.NextTokenLoss.FromLogits(_model.Forward(input, context), target);
        return HeadLoss(_model.Hidden(input, context), target);
    }

    /// <summary>
    /// Under TP, the final hidden states (after the last norm; a sequence shard under sequence parallelism) through this
    /// rank's vocabulary rows of the head into the vocabulary-parallel cross-entropy: the mean loss of targets [B·T].
    /// The last pipeline stage ends with it too.
    /// </summary>
    public Tensor HeadLoss(Tensor hidden, Tensor target)
    {
        var tp = Grid.Tp;
        var h = TensorParallel.Enter(hidden, tp, Options.SequenceParallel);                                 // [B, T, d]
        var head = _model.named_parameters().First(p => p.name == _head).parameter;                        // [V/T, d]
        var logits = nn.functional.linear(h, head);                                                           // [B, T, V/T]
        long rows = head.shape[0], start = tp.Rank * rows;
        long real = Math.Clamp(_model.Config.VocabSize - start, 0, rows);
        return VocabParallel.CrossEntropy(logits.view(-1, rows).to(ScalarType.Float32), target, start, real, tp);
    }

    /// <summary>
    /// <see cref="Loss"/> as the whole sequence's mean on every rank (evaluation): under context parallelism each rank's
    /// loss covers its chunks only, so the CP ranks average theirs (equal token counts).
    /// </summary>
    public Tensor MeanLoss(Tensor input, Tensor target)
    {
        var loss = Loss(input, target);
        if (Grid.Dims.Cp == 1) return loss;
        return Region.AllReduce(loss.detach().reshape(1), Grid.Cp).div_(Grid.Dims.Cp).reshape([]);
    }

    /// <summary>Under sequence parallelism, after the backward: sums the gradients of <see cref="SequenceParallelParameters"/> over TP (one all-reduce).</summary>
    public void ReduceSequenceParallelGradients(FlatParameters flat)
    {
        if (SequenceParallelParameters.Count == 0) return;
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var views = flat.Items.Where(i => SequenceParallelParameters.Contains(i.Name)).Select(i => flat.Gradients.narrow(0, i.Offset, i.Length)).ToArray();
        var all = cat(views);
        Grid.Tp.AllReduceSum(all);
        long off = 0;
        foreach (var v in views) { v.copy_(all.narrow(0, off, v.numel())); off += v.numel(); }
    }

    /// <summary>
    /// The gradient norm over model-parallel ranks: each rank's squared norm counts its shards, and parameters
    /// replicated over TP only on TP rank 0, so each is counted once; the sum is then all-reduced over TP.
    /// </summary>
    public GradientNorm GradientNorm(FlatParameters flat)
    {
        if (!IsTensorParallel) return new GradientNorm(null, []);
        var weights = ones(flat.PaddedCount, device: flat.Values.device);
        if (Grid.TpRank != 0)
            foreach (var i in flat.Items.Where(i => !IsSharded(i.Name))) weights.narrow(0, i.Offset, i.Length).zero_();
        return new GradientNorm(weights.DetachFromDisposeScope(), [Grid.Tp]);
    }

    /// <summary>The full tensor of parameter <paramref name="name"/> from this rank's part (a collective over TP for sharded ones).</summary>
    public Tensor Full(string name, Tensor local) => _shards.TryGetValue(name, out var s) ? s.Gather(local, Grid.Tp) : local;

    /// <summary>This rank's part of parameter <paramref name="name"/> given its full tensor.</summary>
    public Tensor Local(string name, Tensor full) => _shards.TryGetValue(name, out var s) ? s.Take(full, Grid.TpRank, Grid.Dims.Tp) : full;
}

/// <summary>
/// The squared gradient norm of this rank's (shard of the) flat gradient, with replicated parameters weighted so
/// that the sum over <see cref="Groups"/> counts each once. A plain norm when there are no weights.
/// </summary>
public sealed class GradientNorm(Tensor? weights, IReadOnlyList<ICommunicator> groups)
{
    public IReadOnlyList<ICommunicator> Groups { get; } = groups;

    /// <summary>Σ w·g² over <paramref name="grad"/>, which starts at <paramref name="offset"/> of the flat vector: [1] fp64.</summary>
    public Tensor LocalSquares(Tensor grad, long offset)
    {
        if (weights is null) return SumOfSquares(grad);
        return (grad.square() * weights.narrow(0, offset, grad.numel())).sum().to(ScalarType.Float64).reshape(1);
    }

    const long Chunk = 8 << 20;   // 32 MB of fp32 squares at a time

    /// <summary>
    /// Σ g² of a flat vector as [1] fp64, summed chunk by chunk with torch's pairwise sum. Not linalg.vector_norm: its fp32
    /// CPU reduction accumulates sequentially and comes out ~1e-5 low on 10⁵–10⁶ elements (measured against fp64), which
    /// made the one-rank clip differ from the model-parallel one (whose squares are summed) by more than 1e-5.
    /// </summary>
    public static Tensor SumOfSquares(Tensor grad)
    {
        var sq = zeros(1, dtype: ScalarType.Float64, device: grad.device);
        for (long off = 0, n = grad.numel(); off < n; off += Chunk)
            sq.add_(grad.narrow(0, off, Math.Min(Chunk, n - off)).square().sum().to(ScalarType.Float64));
        return sq;
    }

    /// <summary>Sums the squares over the model-parallel groups.</summary>
    public void Reduce(Tensor squares)
    {
        foreach (var g in Groups) if (g.WorldSize > 1) g.AllReduceSum(squares);
    }
}
