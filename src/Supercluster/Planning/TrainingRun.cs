namespace Supercluster.Planning;

/// <summary>How attention runs: FlashAttention (Dao et al. 2022/2023; fused, IO-aware) or as batched GEMMs with a separate
/// (fused scale-mask-)softmax and dropout, as Megatron-LM did before FlashAttention (2021–22 runs).</summary>
public enum AttentionKernel { Flash, Unfused }

/// <summary>What to train: sequence length, token budget, global batch (in sequences), matmul precision, attention kernel and
/// the pipeline engine that runs the stages (<see cref="PipelineSchedule"/>).</summary>
public sealed record TrainingRun(int SeqLen, double Tokens, long BatchSequences, Precision Precision = Precision.Bf16,
    AttentionKernel Attention = AttentionKernel.Flash, PipelineEngine Pipeline = PipelineEngine.Megatron)
{
    public double BatchTokens => (double)BatchSequences * SeqLen;
    public double Steps => Math.Ceiling(Tokens / BatchTokens);

    public void Validate()
    {
        if (SeqLen <= 0) throw new BadInputException($"--seq {SeqLen} must be a positive integer");
        if (!(Tokens > 0)) throw new BadInputException($"--tokens {Tokens} must be positive");
        if (BatchSequences <= 0) throw new BadInputException($"--batch {BatchSequences} must be a positive number of sequences");
    }
}
