using System.Diagnostics;
using System.Text.Json;
using Supercluster.Distributed;

namespace Supercluster.Tests.Parallelism;

/// <summary>Runs a scenario of tests/Supercluster.MultiRank on N real MPI ranks and returns each rank's report.</summary>
public static class MultiRankJob
{
    public static IReadOnlyList<JsonElement> Run(int ranks, string scenario, params string[] args)
    {
        using var dir = new TempDir();
        string[] full = [.. JobSupervisor.MpirunArgs(ranks), "dotnet", Path.Combine(AppContext.BaseDirectory, "Supercluster.MultiRank.dll"), scenario, dir.Path, .. args];
        var psi = new ProcessStartInfo(JobSupervisor.FindMpirun()) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in full) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var o = p.StandardOutput.ReadToEndAsync();
        var e = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(TimeSpan.FromMinutes(3))) { p.Kill(true); throw new TimeoutException($"mpirun {scenario} ran over 3 minutes"); }
        p.WaitForExit();
        Assert.True(p.ExitCode == 0, $"mpirun -np {ranks} {scenario} exited {p.ExitCode}:\n{o.Result}\n{e.Result}");
        return [.. Enumerable.Range(0, ranks).Select(r => JsonDocument.Parse(File.ReadAllText(Path.Combine(dir.Path, $"rank-{r}.json"))).RootElement.Clone())];
    }

    public static double[] Doubles(this JsonElement report, string key) => [.. report.GetProperty(key).EnumerateArray().Select(v => v.GetDouble())];
    public static int[] Ints(this JsonElement report, string key) => [.. report.GetProperty(key).EnumerateArray().Select(v => v.GetInt32())];
}
