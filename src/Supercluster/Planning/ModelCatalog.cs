namespace Supercluster.Planning;

/// <summary>Named model shapes with their sources. Explicit <c>--layers/--hidden/...</c> override a preset's fields.</summary>
public static class ModelCatalog
{
    public sealed record Entry(ModelSpec Spec, string Source);

    public static readonly IReadOnlyList<Entry> All =
    [
        // GPT-2: Radford et al. 2019, Table 2 (context 1024, vocab 50257, tied embeddings).
        new(new("gpt2-124m", 12, 768, 12, 12, 3072, 50257, TiedEmbeddings: true, DefaultSeqLen: 1024), "Radford et al. 2019 (GPT-2), Table 2"),
        new(new("gpt2-350m", 24, 1024, 16, 16, 4096, 50257, TiedEmbeddings: true, DefaultSeqLen: 1024), "Radford et al. 2019 (GPT-2), Table 2"),
        new(new("gpt2-774m", 36, 1280, 20, 20, 5120, 50257, TiedEmbeddings: true, DefaultSeqLen: 1024), "Radford et al. 2019 (GPT-2), Table 2"),
        new(new("gpt2-1.5b", 48, 1600, 25, 25, 6400, 50257, TiedEmbeddings: true, DefaultSeqLen: 1024), "Radford et al. 2019 (GPT-2), Table 2"),
        // Small Llama-style models (TinyLlama 1.1B: Zhang et al. 2024).
        new(new("llama-1b", 22, 2048, 32, 4, 5632, 32000, GatedFfn: true, DefaultSeqLen: 2048), "TinyLlama 1.1B (Zhang et al. 2024)"),
        // GPT-3 175B: Brown et al. 2020, Table 2.1 (96 layers, d=12288, 96 heads, context 2048).
        new(new("gpt3-175b", 96, 12288, 96, 96, 49152, 50257, TiedEmbeddings: true, DefaultSeqLen: 2048), "Brown et al. 2020 (GPT-3), Table 2.1"),
        // Llama 3: Meta 2024 "The Llama 3 Herd of Models", Table 3.
        new(new("llama3-8b", 32, 4096, 32, 8, 14336, 128256, GatedFfn: true, DefaultSeqLen: 8192), "Llama 3 Herd of Models (Meta 2024), Table 3"),
        new(new("llama3-70b", 80, 8192, 64, 8, 28672, 128256, GatedFfn: true, DefaultSeqLen: 8192), "Llama 3 Herd of Models (Meta 2024), Table 3"),
        new(new("llama3-405b", 126, 16384, 128, 8, 53248, 128256, GatedFfn: true, DefaultSeqLen: 8192), "Llama 3 Herd of Models (Meta 2024), Table 3"),
        // Grok-1: xAI open release 2024 (github.com/xai-org/grok-1): 314B, 64 layers, 48 query / 8 kv heads, d=6144,
        // 8 experts with 2 active, vocab 131072, context 8192; expert MLP width 32768 (gated).
        new(new("grok1-314b", 64, 6144, 48, 8, 32768, 131072, Experts: 8, ActiveExperts: 2, GatedFfn: true, DefaultSeqLen: 8192), "xAI Grok-1 open weights release (2024)"),
        // Megatron-LM 1T: Narayanan et al. 2021, Table 1 (128 layers, d=25600, 160 heads, vocab 51200, seq 2048).
        new(new("megatron-1t", 128, 25600, 160, 160, 102400, 51200, DefaultSeqLen: 2048), "Narayanan et al. 2021 (Megatron-LM), Table 1"),
        // GPT-4-class dense stand-in (our choice, not a published shape): GPT-4 is reported to be a ~1.8T-parameter MoE;
        // we plan the harder dense case with the same total size and its reported 120 layers: d=35840 (280 heads of 128), ffn 4d,
        // cl100k vocabulary: 12·L·d² + 2·V·d ≈ 1.85T parameters.
        new(new("gpt4-class-1.8t", 120, 35840, 280, 280, 143360, 100352, DefaultSeqLen: 8192), "Supercluster stand-in: dense model with GPT-4's reported ~1.8T parameters and 120 layers"),
    ];

    /// <summary>A catalog shape, or a train preset (tiny, moe-tiny, grok1-mini, …) as train builds it: one configuration for both commands.</summary>
    public static ModelSpec Get(string name) =>
        All.FirstOrDefault(e => string.Equals(e.Spec.Name, name, StringComparison.OrdinalIgnoreCase))?.Spec
        ?? (Model.ModelPresets.All.TryGetValue(name, out var preset) ? FlopsModel.Spec(preset) with { Name = name } : null)
        ?? throw new BadInputException($"--model '{name}' is unknown: expected one of {string.Join(", ", All.Select(e => e.Spec.Name).Concat(Model.ModelPresets.All.Keys))}");
}
