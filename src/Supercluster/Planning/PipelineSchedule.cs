namespace Supercluster.Planning;

/// <summary>Which pipeline engine runs the stages: its schedule and how it moves activations between stages.</summary>
public enum PipelineEngine
{
    /// <summary>Megatron-LM's 1F1B (PipeDream-Flush) and interleaved 1F1B: each stage runs forward and backward back to
    /// back, send and receive of a slot are batched (<c>batch_isend_irecv</c>), so a slot costs F + B.</summary>
    Megatron,
    /// <summary>DeepSpeed's pipeline engine (<c>deepspeed/runtime/pipe/schedule.py</c>, <c>TrainSchedule</c>): every stage
    /// runs 2·(m + p − 1) steps, one forward or one backward each (even stages forward on even steps, odd stages on odd
    /// steps), and each step starts with a blocking send and a blocking receive paired with a neighbour's.</summary>
    DeepSpeed,
}

/// <summary>
/// Time a pipeline schedule takes for m micro-batches on p stages, given one micro-batch's forward time F and backward time B
/// (recomputation and exposed communication included) on the slowest stage.
/// * Megatron-LM 1F1B (Narayanan et al. 2021 §2.2): (m + (p − 1)/v)·(F + B): m slots of work plus the (p − 1)/v-slot bubble.
/// * DeepSpeed's <c>TrainSchedule</c> takes the same time. It runs 2·(m + p − 1) steps, one forward or one backward each, and
///   each step starts with blocking sends and receives paired with one neighbour (NCCL send/recv rendezvous), which looks
///   like lock-step; but the stages settle into a stagger of B − F per pair of stages and the steady state costs F + B per
///   micro-batch, the fill and drain (p − 1)·(F + B) — checked against a step-by-step replay of <c>TrainSchedule</c>
///   (PipelineScheduleTests). So DeepSpeed's schedule is not where MT-NLG and BLOOM lose throughput; its transfers are
///   counted separately (<see cref="Transfers"/>).
/// </summary>
public static class PipelineSchedule
{
    /// <summary>Seconds of the pipelined part of a step (work plus bubble). F and B include the communication exposed in them.</summary>
    public static double Seconds(double forward, double backward, long microBatches, int stages, int interleave = 1) =>
        stages <= 1 ? microBatches * (forward + backward) : (microBatches + (stages - 1.0) / interleave) * (forward + backward);

    /// <summary>Point-to-point transfers of one activation (or its gradient) per stage in a step, each exposed:
    /// Megatron sends and receives at once (2·(v·m + p − 1) per step, Narayanan et al. 2021 §2.2.2);
    /// DeepSpeed sends, then receives, in each of its 2·(m + p − 1) steps (blocking, in sequence): 4·(m + p − 1).</summary>
    public static double Transfers(PipelineEngine engine, long microBatches, int stages, int interleave = 1) =>
        stages <= 1 ? 0 : engine == PipelineEngine.DeepSpeed
            ? 4.0 * (microBatches + stages - 1)
            : 2.0 * (interleave * microBatches + stages - 1);
}
