using static TorchSharp.torch;

namespace Supercluster.Training;

/// <summary>Hyperparameters every optimizer gets; each takes what applies to it.</summary>
public sealed record OptimizerSettings(double WeightDecay = 0.1, string Implementation = "auto");

/// <summary>
/// The optimizers <c>--optimizer NAME[:IMPLEMENTATION]</c> can name. Registering one is one line here; the bare values
/// <c>auto</c>, <c>fused</c> and <c>torch</c> choose AdamW's implementation, as they always did.
/// </summary>
public static class Optimizers
{
    /// <summary>name → factory(decay mask over the optimizer's length: 1 where weight decay applies, settings).</summary>
    static readonly Dictionary<string, Func<Tensor, OptimizerSettings, IOptimizer>> Registry = new()
    {
        ["adamw"] = (mask, s) => new AdamW(mask, weightDecay: s.WeightDecay, implementation: s.Implementation),
        ["lion"] = (mask, s) => new Lion(mask, weightDecay: s.WeightDecay, implementation: s.Implementation),
    };

    public static IReadOnlyCollection<string> Names => Registry.Keys;

    /// <summary>Splits and checks <c>--optimizer</c>: (registered name, implementation).</summary>
    public static (string Name, string Implementation) Parse(string spec)
    {
        string s = spec.Trim().ToLowerInvariant();
        int colon = s.IndexOf(':');
        string name = colon < 0 ? s : s[..colon], impl = colon < 0 ? "auto" : s[(colon + 1)..];
        if (colon < 0 && !Registry.ContainsKey(name)) (name, impl) = ("adamw", s);   // auto | fused | torch: AdamW's
        if (!Registry.ContainsKey(name))
            throw new BadInputException($"--optimizer: unknown optimizer '{name}', expected one of {string.Join(", ", Registry.Keys)} (optionally :auto, :fused or :torch)");
        return (name, AdamW.ParseImplementation(impl));
    }

    /// <summary>The optimizer <paramref name="spec"/> names over a vector whose decay mask is <paramref name="decayMask"/>.</summary>
    public static IOptimizer Create(string spec, Tensor decayMask, double weightDecay)
    {
        var (name, impl) = Parse(spec);
        return Registry[name](decayMask, new OptimizerSettings(weightDecay, impl));
    }
}
