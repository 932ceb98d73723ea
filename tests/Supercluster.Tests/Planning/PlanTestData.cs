using Supercluster.Planning;

namespace Supercluster.Tests.Planning;

/// <summary>Builds planner inputs for tests with the CLI's defaults.</summary>
static class PlanTestData
{
    public static PlanInputs Inputs(ModelSpec model, string gpu, int gpus, ParallelLayout layout, long batchSequences, int? seq = null,
        double tokens = 1e12, Precision precision = Precision.Bf16, double computeEfficiency = 0) =>
        new(model, new TrainingRun(seq ?? model.DefaultSeqLen, tokens, batchSequences, precision),
            new ClusterSpec(GpuCatalog.Get(gpu), gpus, ComputeEfficiency: computeEfficiency), layout, new OverlapAssumptions(), new OperationsSpec());
}
