using Supercluster.Distributed;
using Supercluster.Model;
using Supercluster.Parallelism;
using Supercluster.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Supercluster.MultiRank;

/// <summary>ZeRO-2 and ZeRO-3 (FSDP) on real MPI ranks against one process with the same global batch.</summary>
static class ShardedDataParallelScenarios
{
    const int Rows = 8, MicroRows = 2, SeqLen = 16, Vocab = 96;

    /// <summary>
    /// Args: zero stage (2 or 3), model preset (tiny, llama-tiny). Every rank builds the same seeded model; its data-parallel
    /// copy takes rows [rank·8/D, +8/D) of a seeded global batch as micro-batches of 2 rows, and reports the averaged
    /// gradient after the first backward (gathered to the full vector in flat order) next to the gradient one process
    /// computes over all 8 rows, and (ZeRO-3) the bytes of its resident parameter memory next to the model's.
    /// </summary>
    [Scenario("zero-grads")]
    static void Gradients(ScenarioContext ctx)
    {
        int zero = int.Parse(ctx.Arg(0, "3"));
        var config = ModelPresets.Get(ctx.Arg(1, "tiny")) with { VocabSize = Vocab, SeqLen = SeqLen };
        var w = ctx.World;
        var gen = new Random(11);
        var tokens = Enumerable.Range(0, Rows * (SeqLen + 1)).Select(_ => (long)gen.Next(Vocab)).ToArray();
        (long[] X, long[] Y) Micro(int row)
        {
            var x = new long[MicroRows * SeqLen];
            var y = new long[MicroRows * SeqLen];
            for (int r = 0; r < MicroRows; r++)
            {
                Array.Copy(tokens, (row + r) * (SeqLen + 1), x, r * SeqLen, SeqLen);
                Array.Copy(tokens, (row + r) * (SeqLen + 1) + 1, y, r * SeqLen, SeqLen);
            }
            return (x, y);
        }
        var cpu = new Device(DeviceType.CPU);

        // One process over all rows: the reference gradient in flat (named_parameters) order.
        Tensor reference;
        using (var single = CausalLM.Create(config, 5))
        {
            int micros = Rows / MicroRows;
            for (int m = 0; m < micros; m++)
            {
                var (x, y) = Micro(m * MicroRows);
                NextTokenLoss.Batch(single, x, y, MicroRows, SeqLen, cpu).div(micros).backward();
            }
            reference = cat(single.parameters().Select(p => p.grad!.reshape(-1)).ToArray());
        }

        using var model = CausalLM.Create(config, 5);
        long modelBytes = model.parameters().Sum(p => p.numel() * 4);
        int perRank = Rows / w.WorldSize, localMicros = perRank / MicroRows;
        Tensor gathered;
        if (zero == 3)
        {
            using var fsdp = new FullyShard(model, w, ScalarType.Float32);
            ctx.Report("resident_parameter_bytes", ResidentMemory.Bytes([.. model.parameters(), fsdp.Values]));
            fsdp.ZeroGradients();
            for (int m = 0; m < localMicros; m++)
            {
                var (x, y) = Micro(w.Rank * perRank + m * MicroRows);
                NextTokenLoss.Batch(model, x, y, MicroRows, SeqLen, cpu).div(localMicros).backward();
            }
            var (shard, _) = fsdp.ReduceGradients();
            gathered = fsdp.GatherFlat(shard);
        }
        else
        {
            using var flat = new FlatParameters(model.named_parameters().Select(p => (p.name, p.parameter)), w.WorldSize);
            var dp = new DataParallel(flat, w, zero);
            ctx.Report("full_gradient_between_steps", flat.HasGradients ? 1 : 0);
            flat.ZeroGradients();
            for (int m = 0; m < localMicros; m++)
            {
                var (x, y) = Micro(w.Rank * perRank + m * MicroRows);
                NextTokenLoss.Batch(model, x, y, MicroRows, SeqLen, cpu).div(localMicros).backward();
            }
            var (shard, _) = dp.ReduceGradients();
            ctx.Report("full_gradient_after_reduce", flat.HasGradients ? 1 : 0);
            var full = zeros(flat.PaddedCount);
            w.AllGather(shard, full);
            gathered = full.narrow(0, 0, flat.Count);
        }
        ctx.Report("model_bytes", modelBytes);
        ctx.Report("relative_difference", (gathered - reference).norm().item<float>() / reference.norm().item<float>());
        ctx.Report("gradient_norm", reference.norm().item<float>());
    }
}
