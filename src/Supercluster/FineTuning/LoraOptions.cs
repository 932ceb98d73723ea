using Supercluster.Model;

namespace Supercluster.FineTuning;

/// <summary>
/// LoRA's hyper-parameters (Hu et al. 2021): rank r, α (the update is scaled by α/r), the projections it adapts and
/// dropout on the adapter's input. Targets are named by role, the same for every family: q, k, v, o (attention),
/// up, down, gate (MLP; gate is Llama's only).
/// </summary>
public sealed record LoraOptions(int Rank, double Alpha, IReadOnlyList<string> Targets, double Dropout = 0)
{
    public static readonly IReadOnlyList<string> Roles = ["q", "k", "v", "o", "up", "down", "gate"];
    public double Scale => Alpha / Rank;

    /// <summary>Parses <c>--lora-targets q,k,v,o</c>; an unknown role is bad input naming it.</summary>
    public static IReadOnlyList<string> ParseTargets(string list)
    {
        var roles = list.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(r => r.ToLowerInvariant()).Distinct().ToList();
        if (roles.Count == 0) throw new BadInputException($"--lora-targets '{list}': expected a comma-separated list of {string.Join(", ", Roles)}");
        foreach (var r in roles)
            if (!Roles.Contains(r)) throw new BadInputException($"--lora-targets: unknown projection '{r}', expected some of {string.Join(", ", Roles)}");
        return roles;
    }

    /// <summary>
    /// The module (path suffix within a block) a role names in a family. GPT-2 fuses q, k and v into one projection,
    /// c_attn: any of them adapts c_attn as a whole (as PEFT's GPT-2 default does).
    /// </summary>
    public static string ModuleOf(ModelFamily family, string role) => (family, role) switch
    {
        (ModelFamily.Gpt2, "q" or "k" or "v") => "attn.c_attn",
        (ModelFamily.Gpt2, "o") => "attn.c_proj",
        (ModelFamily.Gpt2, "up") => "mlp.c_fc",
        (ModelFamily.Gpt2, "down") => "mlp.c_proj",
        (ModelFamily.Gpt2, "gate") => throw new BadInputException("--lora-targets gate: the gpt2 family has no gate projection (it is Llama's SwiGLU); use q,k,v,o,up,down"),
        (ModelFamily.Llama, "q" or "k" or "v" or "o") => $"self_attn.{role}_proj",
        (ModelFamily.Llama, "up" or "down" or "gate") => $"mlp.{role}_proj",
        _ => throw new BadInputException($"--lora-targets: unknown projection '{role}'"),
    };

    /// <summary>Module paths of the targets in every layer, e.g. h.0.attn.c_attn or layers.0.self_attn.q_proj.</summary>
    public IReadOnlyList<string> ModulePaths(ModelConfig config)
    {
        var modules = Targets.Select(r => ModuleOf(config.Family, r)).Distinct().ToList();
        string layer = config.Family == ModelFamily.Gpt2 ? "h" : "layers";
        return Enumerable.Range(0, config.NLayer).SelectMany(i => modules.Select(m => $"{layer}.{i}.{m}")).ToList();
    }

    public void Validate()
    {
        if (Rank <= 0) throw new BadInputException($"--lora-rank {Rank}: expected a positive rank");
        if (!(Alpha > 0)) throw new BadInputException($"--lora-alpha {Alpha}: expected a positive number");
        if (Dropout is < 0 or >= 1) throw new BadInputException($"--lora-dropout {Dropout}: expected 0 ≤ p < 1");
    }
}
