using Supercluster.Model;
using Supercluster.Runtime;
using TorchSharp;

namespace Supercluster.Tests;

/// <summary>Loads libtorch the way the CLI does; every test touching tensors calls <see cref="Init"/> first.</summary>
public static class TorchSetup
{
    public static void Init()
    {
        LibTorchLoader.EnsureLoaded();
        torch.set_num_threads(Math.Max(1, Environment.ProcessorCount));
    }

    public static ModelConfig TinyGpt2(int vocab = 11, int ctx = 16) => new()
    {
        Family = ModelFamily.Gpt2, VocabSize = vocab, SeqLen = ctx, NLayer = 2, NHead = 2, NKvHead = 2, NEmbd = 8, FfnHidden = 32,
    };

    public static ModelConfig TinyLlama(int vocab = 11, int ctx = 16) => new()
    {
        Family = ModelFamily.Llama, VocabSize = vocab, SeqLen = ctx, NLayer = 2, NHead = 4, NKvHead = 2, NEmbd = 16, FfnHidden = 24,
    };
}
