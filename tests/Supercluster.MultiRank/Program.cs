using System.Reflection;
using System.Text.Json;
using Supercluster.Distributed;
using Supercluster.Runtime;
using TorchSharp;

// Scenarios that run on every rank of a real mpirun job (CPU, MPI): `Supercluster.MultiRank SCENARIO OUT_DIR [ARGS…]`.
// Each rank writes OUT_DIR/rank-N.json with what it measured; the xunit side (MultiRankJob) compares ranks and references.
// A scenario is a static method marked [Scenario("name")] taking a ScenarioContext.
namespace Supercluster.MultiRank;

[AttributeUsage(AttributeTargets.Method)]
public sealed class ScenarioAttribute(string name) : Attribute
{
    public string Name { get; } = name;
}

public sealed class ScenarioContext(ICommunicator world, string[] args)
{
    readonly Dictionary<string, object> _results = [];
    public ICommunicator World { get; } = world;
    public string[] Args { get; } = args;
    public string Arg(int i, string fallback) => i < Args.Length ? Args[i] : fallback;

    /// <summary>Records a named result of this rank (numbers, text, arrays).</summary>
    public void Report(string key, object value) => _results[key] = value;

    /// <summary>A tensor's values as a flat double array.</summary>
    public static double[] Values(torch.Tensor t) => t.detach().to(torch.ScalarType.Float64).cpu().contiguous().reshape(-1).data<double>().ToArray();

    internal Dictionary<string, object> Results => _results;
}

public static class Program
{
    public static int Main(string[] args)
    {
        if (args.Length < 2) { Console.Error.WriteLine("usage: Supercluster.MultiRank SCENARIO OUT_DIR [ARGS…]"); return 2; }
        var scenario = typeof(Program).Assembly.GetTypes().SelectMany(t => t.GetMethods(BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Static))
            .FirstOrDefault(m => m.GetCustomAttribute<ScenarioAttribute>()?.Name == args[0]);
        if (scenario is null) { Console.Error.WriteLine($"unknown scenario '{args[0]}'"); return 2; }
        LibTorchLoader.EnsureLoaded();
        torch.set_num_threads(1);
        using var world = Communicators.Create("auto", deviceIsCuda: false);
        var ctx = new ScenarioContext(world, args[2..]);
        scenario.Invoke(null, [ctx]);
        Directory.CreateDirectory(args[1]);
        string path = Path.Combine(args[1], $"rank-{world.Rank}.json");
        File.WriteAllText(path + ".tmp", JsonSerializer.Serialize(ctx.Results));
        File.Move(path + ".tmp", path, overwrite: true);
        world.Barrier();
        return 0;
    }
}
