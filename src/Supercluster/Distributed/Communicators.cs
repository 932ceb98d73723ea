using TorchSharp;

namespace Supercluster.Distributed;

/// <summary>Chooses the collective backend: <c>auto</c> = single process when alone, NCCL with CUDA, else MPI.</summary>
public static class Communicators
{
    public static ICommunicator Create(string backend, bool deviceIsCuda, LaunchEnvironment? env = null)
    {
        env ??= LaunchEnvironment.Detect();
        backend = backend.Trim().ToLowerInvariant();
        if (backend is not ("auto" or "mpi" or "nccl" or "single"))
            throw new BadInputException($"--backend: unknown backend '{backend}', expected auto, mpi or nccl");
        if (backend == "nccl" && !deviceIsCuda)
            throw new BadInputException("--backend nccl needs --device cuda: NCCL runs collectives on GPUs only");
        if (env.WorldSize == 1 && backend is "auto" or "single") return new SingleProcess();
        if (backend == "single") throw new BadInputException($"--backend single, but the launcher started {env.WorldSize} ranks");
        if (backend == "nccl" || (backend == "auto" && deviceIsCuda && torch.cuda.is_available())) return new NcclCommunicator(env);
        return new MpiCommunicator(env);
    }
}
