using Supercluster.Distributed;

namespace Supercluster.Tests.Distributed;

/// <summary>Rank and world size from mpirun, Slurm (<c>srun</c>) or torchrun-style variables, as prepare and train read them.</summary>
public class LaunchEnvironmentTests
{
    static LaunchEnvironment Detect(params (string Name, string Value)[] vars) =>
        LaunchEnvironment.Detect(name => vars.FirstOrDefault(v => v.Name == name).Value);

    [Fact]
    public void EachLauncherIsRead()
    {
        Assert.Equal(new LaunchEnvironment(1, 3, 1, "mpirun"), Detect(("OMPI_COMM_WORLD_RANK", "1"), ("OMPI_COMM_WORLD_SIZE", "3"), ("OMPI_COMM_WORLD_LOCAL_RANK", "1")));
        // srun sets SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID; rank 5 of 8 is the second on its node of four.
        Assert.Equal(new LaunchEnvironment(5, 8, 1, "slurm"), Detect(("SLURM_PROCID", "5"), ("SLURM_NTASKS", "8"), ("SLURM_LOCALID", "1")));
        Assert.Equal(new LaunchEnvironment(2, 4, 2, "env"), Detect(("RANK", "2"), ("WORLD_SIZE", "4"))); // no LOCAL_RANK: the rank
        Assert.Equal(new LaunchEnvironment(0, 1, 0, "single"), Detect(("SLURM_PROCID", "0"))); // a Slurm job step without a task count
        // mpirun inside a Slurm allocation: mpirun's own numbering wins (it is the launcher that started this process).
        Assert.Equal("mpirun", Detect(("OMPI_COMM_WORLD_RANK", "0"), ("OMPI_COMM_WORLD_SIZE", "2"), ("SLURM_PROCID", "0"), ("SLURM_NTASKS", "1")).Launcher);
    }

    [Fact]
    public void BadValuesNameTheVariable()
    {
        Assert.Contains("SLURM_NTASKS=two: expected an integer", Assert.Throws<BadInputException>(() => Detect(("SLURM_PROCID", "0"), ("SLURM_NTASKS", "two"))).Message);
        Assert.Contains("SLURM_PROCID=4, SLURM_NTASKS=4: expected 0 ≤ rank < world size", Assert.Throws<BadInputException>(() => Detect(("SLURM_PROCID", "4"), ("SLURM_NTASKS", "4"))).Message);
    }
}
