namespace Supercluster.Planning;

/// <summary>What to train: sequence length, token budget, global batch (in sequences) and matmul precision.</summary>
public sealed record TrainingRun(int SeqLen, double Tokens, long BatchSequences, Precision Precision = Precision.Bf16)
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
