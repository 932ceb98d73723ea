namespace Supercluster.Distributed;

/// <summary>
/// Rank, world size and local rank from the launcher's environment: Open MPI (OMPI_COMM_WORLD_*), Slurm (SLURM_PROCID,
/// SLURM_NTASKS, SLURM_LOCALID), or torchrun-style RANK / WORLD_SIZE / LOCAL_RANK. Absent all: one process.
/// </summary>
public sealed record LaunchEnvironment(int Rank, int WorldSize, int LocalRank, string Launcher)
{
    public static LaunchEnvironment Detect(Func<string, string?>? env = null)
    {
        env ??= Environment.GetEnvironmentVariable;
        foreach (var (launcher, rank, size, local) in new[]
        {
            ("mpirun", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"),
            ("slurm", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"),
            ("env", "RANK", "WORLD_SIZE", "LOCAL_RANK"),
        })
        {
            if (env(rank) is not { } r || env(size) is not { } s) continue;
            int R = Parse(rank, r), S = Parse(size, s), L = env(local) is { } l ? Parse(local, l) : R;
            if (S < 1 || R < 0 || R >= S) throw new BadInputException($"{rank}={r}, {size}={s}: expected 0 ≤ rank < world size");
            return new LaunchEnvironment(R, S, L, launcher);
        }
        return new LaunchEnvironment(0, 1, 0, "single");
    }

    static int Parse(string name, string value) =>
        int.TryParse(value, out var v) ? v : throw new BadInputException($"{name}={value}: expected an integer");
}
