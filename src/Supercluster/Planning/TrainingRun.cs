namespace Supercluster.Planning;

/// <summary>How attention runs: FlashAttention (Dao et al. 2022/2023; fused, IO-aware) or as batched GEMMs with a separate
/// (fused scale-mask-)softmax and dropout, as Megatron-LM did before FlashAttention (2021–22 runs).</summary>
public enum AttentionKernel { Flash, Unfused }

/// <summary>How each micro-batch's weight gradients are added to the step's gradient (memory traffic per parameter per micro-batch):
/// * <see cref="Fp32Pass"/>: a separate pass into an fp32 main-gradient buffer, read 2 B wgrad + read and write 4 B (Megatron-LM
///   <c>main_grad</c> without fusion; DeepSpeed's fp32 gradient partitions);
/// * <see cref="FusedIntoGemm"/>: the wgrad GEMM accumulates into the fp32 buffer itself (Megatron-LM from Feb 2022,
///   <c>--gradient-accumulation-fusion</c> on by default for bf16: <c>fused_dense_cuda.wgrad_gemm_accum_fp32</c>), so no pass;
///   its epilogue's 8 B per output element sit under a GEMM whose K is the micro-batch's tokens;
/// * <see cref="Fp16InPlace"/>: autograd adds the fp16 gradient in place, read 2 + 2, write 2 (Megatron-LM 2021 with fp16 and
///   neither contiguous buffers nor fp32 accumulation, as its sc21 scripts ran);
/// * <see cref="Bf16ViaFp32Copy"/>: DeepSpeed's <c>BF16_Optimizer</c> (2022, written for BLOOM), which the pipeline engine calls
///   after every micro-batch's backward (<c>update_hp_grads</c>: <c>hp_grad.add_(lp.grad.to(fp32))</c>, the bf16 gradient then
///   dropped by <c>clear_lp_grads</c>, <c>grad = None</c>): the cast materialises an fp32 copy (read 2, write 4), the add reads
///   it and the fp32 gradient and writes that (4 + 4 + 4): 18 B.</summary>
public enum GradAccumulation { Fp32Pass, FusedIntoGemm, Fp16InPlace, Bf16ViaFp32Copy }

/// <summary>What to train: sequence length, token budget, global batch (in sequences), matmul precision, attention kernel,
/// the pipeline engine that runs the stages (<see cref="PipelineSchedule"/>), how gradients accumulate, and how Transformer
/// Engine's userbuffers TP overlap chunks the GEMMs and which SMs it keeps from them (<see cref="UserbufferOverlap"/>; null = not used).</summary>
public sealed record TrainingRun(int SeqLen, double Tokens, long BatchSequences, Precision Precision = Precision.Bf16,
    AttentionKernel Attention = AttentionKernel.Flash, PipelineEngine Pipeline = PipelineEngine.Megatron,
    GradAccumulation GradAccumulation = GradAccumulation.Fp32Pass, UserbufferOverlap? Userbuffers = null)
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
