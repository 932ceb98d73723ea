using Supercluster.Distributed;
using Supercluster.Model;
using Supercluster.Planning;
using static TorchSharp.torch;

namespace Supercluster.Parallelism;

/// <summary>
/// Sequence parallelism (Korthikanti et al. 2022): between the tensor-parallel layers (norms, residual adds, GPT-2's
/// position embedding) each TP rank keeps only its T/TP tokens. The entries and exits are in <see cref="TensorParallel"/>
/// (all-gather before the column-parallel layers, reduce-scatter after the row-parallel ones); the parameters used
/// there see part of the sequence, so their gradients are summed over TP (<see cref="ParallelModel.ReduceSequenceParallelGradients"/>).
/// </summary>
public static class SequenceParallel
{
    /// <summary>A module whose output [B or 1, T, d] enters the sequence-parallel region: this rank's T/TP tokens of it.</summary>
    public static void SplitOutput(nn.Module<Tensor, Tensor> module, ICommunicator tp) =>
        module.register_forward_hook((_, _, y) =>
        {
            long part = y.shape[1] / tp.WorldSize;
            return y.narrow(1, tp.Rank * part, part);
        });

    /// <summary>
    /// Activation bytes per micro-batch on one rank that sequence parallelism saves over tensor parallelism alone, all
    /// layers together: <see cref="MemoryModel.SequenceParallelSavingPerLayer"/> (the same formula as plan's memory model).
    /// </summary>
    public static double ActivationSavingBytes(ModelConfig c, int seqLen, int microBatch, ParallelDims d) =>
        c.NLayer * MemoryModel.SequenceParallelSavingPerLayer(FlopsModel.Spec(c), seqLen,
            new ParallelLayout(Tp: d.Tp, Pp: d.Pp, Dp: d.Dp, Cp: d.Cp, MicroBatch: microBatch, Recompute: Recompute.None));
}
