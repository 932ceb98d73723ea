using TorchSharp;
using static TorchSharp.torch;

namespace Supercluster.Model;

/// <summary>
/// A decoder-only language model: token ids [B, T] → logits [B, T, vocab].
/// Families implement <see cref="Forward"/>; training, checkpointing and parallelism work on this surface only.
/// </summary>
public abstract class CausalLM : nn.Module<Tensor, Tensor>
{
    protected CausalLM(string name, ModelConfig config) : base(name) => Config = config;

    public ModelConfig Config { get; }

    /// <summary>Logits [B, T, vocab] for ids [B, T]; with a cache, ids continue the cached sequence.</summary>
    public abstract Tensor Forward(Tensor idx, KvCache? cache);

    /// <summary>Final hidden states [B, T, n_embd] after the last norm (embeddings for search).</summary>
    public abstract Tensor Hidden(Tensor idx, KvCache? cache = null);

    public override Tensor forward(Tensor idx) => Forward(idx, null);

    /// <summary>
    /// Runs one unit of the forward (the embedding, a block, the final norm and head) that uses the parameters of the
    /// named modules. Parallelism may wrap it (fully sharded data parallelism gathers their parameters for it and again
    /// for its backward: <c>Parallelism/FullyShard.cs</c>); by default it just runs.
    /// </summary>
    public Func<string[], Tensor, Func<Tensor, Tensor>, Tensor> RunUnit { get; set; } = static (_, x, f) => f(x);

    // The forward pass in three parts, Forward(idx) = NormAndHead(RunBlocks(EmbedTokens(idx), 0, n_layer)), so that a
    // part of the model can run alone (a pipeline stage).

    /// <summary>Embeddings of ids [B, T] → x [B, T, n_embd]; positions from <paramref name="cache"/> (default 0 … T−1).</summary>
    public abstract Tensor EmbedTokens(Tensor idx, KvCache? cache = null);

    /// <summary>Blocks <paramref name="from"/> … <paramref name="to"/>−1 over x [B, T, n_embd], attending through <paramref name="cache"/> (default: plain causal).</summary>
    public abstract Tensor RunBlocks(Tensor x, int from, int to, KvCache? cache = null);

    /// <summary>Final norm and output head: x [B, T, n_embd] → logits [B, T, vocab].</summary>
    public abstract Tensor NormAndHead(Tensor x);

    /// <summary>The final norm alone: x [B, T, n_embd] → the hidden states the head reads (a split head computes its own logits).</summary>
    public abstract Tensor FinalNorm(Tensor x);

    /// <summary>Parameters used by <see cref="EmbedTokens"/> and by <see cref="NormAndHead"/> (a tied table is in both).</summary>
    public abstract IReadOnlyList<string> EmbeddingParameters { get; }
    public abstract IReadOnlyList<string> HeadParameters { get; }

    /// <summary>The block a parameter belongs to, or −1 (its name starts with the block list's name and index).</summary>
    public int LayerOf(string parameter)
    {
        string prefix = BlocksName + ".";
        if (!parameter.StartsWith(prefix)) return -1;
        var rest = parameter.AsSpan(prefix.Length);
        int dot = rest.IndexOf('.');
        return int.Parse(dot < 0 ? rest : rest[..dot]);
    }

    /// <summary>Name of the module list of blocks ("h", "layers").</summary>
    protected abstract string BlocksName { get; }

    /// <summary>Parameters with one row per token ([padded vocab, n_embd]); checkpoints store only their first vocab rows.</summary>
    public abstract IReadOnlyList<string> VocabTables { get; }

    /// <summary>Normal(0, std) init of a vocabulary table's real rows (the same draws as an unpadded table); padding rows zero.</summary>
    protected void InitVocabTable(Tensor table, double std)
    {
        nn.init.normal_(table.narrow(0, 0, Config.VocabSize), 0, std);
        if (Config.PaddedVocab > Config.VocabSize) table.narrow(0, Config.VocabSize, Config.PaddedVocab - Config.VocabSize).zero_();
    }

    /// <summary>Logits over the padded head cut back to the real vocabulary: [B, T, padded] → [B, T, vocab] (a view).</summary>
    protected Tensor CutPadding(Tensor logits) =>
        Config.PaddedVocab == Config.VocabSize ? logits : logits.narrow(-1, 0, Config.VocabSize);

    /// <summary>Parameter names in Hugging Face's layout for this family, and whether the stored matrix is transposed.</summary>
    public abstract IReadOnlyDictionary<string, (string HfName, bool Transposed)> HfNames { get; }

    /// <summary>Builds the model for a config with its family's initialisation, seeded for reproducibility.</summary>
    /// <param name="experts">Expert parallelism: the experts this rank holds (null: all). The other parameters and every
    /// expert's initial values are the same in every layout.</param>
    public static CausalLM Create(ModelConfig config, long seed, ExpertShard? experts = null)
    {
        config.Validate();
        CausalLM model = config.Family switch
        {
            ModelFamily.Gpt2 => new Gpt2(config, experts),
            ModelFamily.Llama => new Llama(config, experts),
            _ => throw new ArgumentOutOfRangeException(nameof(config)),
        };
        // Seeded after construction: the modules' own default init consumes random numbers in amounts that depend on
        // table sizes (vocabulary padding), and the family's init below must not.
        torch.manual_seed(seed);
        using (no_grad()) model.Initialise();
        return model;
    }

    /// <summary>The family's initialisation of every parameter (called once by <see cref="Create"/>, seeded).</summary>
    protected abstract void Initialise();

    /// <summary>
    /// Experts of every MoE block, N(0, std) and the down projection N(0, residualStd): one seed per block drawn from the
    /// model's stream, then one generator per expert, so a rank holding some experts gets the values the full model has.
    /// </summary>
    protected void InitialiseExperts(double std, double residualStd)
    {
        foreach (var (_, moe) in MoE.Layers(this))
            moe.InitialiseExperts(randint(0, int.MaxValue, [1], dtype: ScalarType.Int64).item<long>(), std, residualStd);
    }

    /// <summary>
    /// Attention of q [B, H, Tq, hd] over k, v [B, H, Tk, hd] under the cache's mask (<see cref="KvCache.Mask"/>):
    /// null is plain causal attention over keys that are the queries' own tokens.
    /// Key/value heads fewer than the query heads (grouped-query attention) are repeated to match.
    /// </summary>
    public static Tensor Attend(Tensor q, Tensor k, Tensor v, Tensor? mask)
    {
        if (k.shape[1] != q.shape[1])
        {
            k = k.repeat_interleave(q.shape[1] / k.shape[1], dim: 1);                // [B, H, T_all, hd]
            v = v.repeat_interleave(q.shape[1] / v.shape[1], dim: 1);
        }
        return mask is null
            ? nn.functional.scaled_dot_product_attention(q, k, v, is_casual: true)
            : nn.functional.scaled_dot_product_attention(q, k, v, attn_mask: mask);
    }
}
