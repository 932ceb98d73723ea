using Supercluster.Checkpointing;
using Supercluster.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace Supercluster.Tests.Checkpointing;

public class CheckpointTests
{
    public CheckpointTests() => TorchSetup.Init();

    [Fact]
    public void Safetensors_round_trip_keeps_names_shapes_dtypes_bytes_and_metadata()
    {
        using var dir = new TempDir();
        var a = randn(3, 5);
        var b = arange(7, dtype: ScalarType.Int64);
        var c = randn(2, 2).to(ScalarType.BFloat16);
        SafeTensors.Write(dir["x.safetensors"], [("a", a), ("b.weight", b), ("c", c)], new Dictionary<string, string> { ["format"] = "pt" });

        var (t, meta) = SafeTensors.Read(dir["x.safetensors"]);
        Assert.Equal("pt", meta["format"]);
        Assert.True(t["a"].eq(a).all().item<bool>());
        Assert.True(t["b.weight"].eq(b).all().item<bool>());
        Assert.Equal(ScalarType.BFloat16, t["c"].dtype);
        Assert.True(t["c"].eq(c).all().item<bool>());

        // The header is the documented layout: u64 length then JSON with data_offsets.
        var bytes = File.ReadAllBytes(dir["x.safetensors"]);
        long n = BitConverter.ToInt64(bytes, 0);
        var header = System.Text.Json.JsonDocument.Parse(bytes.AsMemory(8, (int)n)).RootElement;
        Assert.Equal("F32", header.GetProperty("a").GetProperty("dtype").GetString());
        Assert.Equal(8 + n + 15 * 4 + 7 * 8 + 4 * 2, bytes.Length);
    }

    [Fact]
    public void Corrupt_safetensors_files_are_rejected_with_the_file_name()
    {
        using var dir = new TempDir();
        File.WriteAllBytes(dir["short.safetensors"], [1, 2, 3]);
        Assert.Contains("short.safetensors", Assert.Throws<BadInputException>(() => SafeTensors.Read(dir["short.safetensors"])).Message);
        SafeTensors.Write(dir["ok.safetensors"], [("w", randn(4, 4))]);
        var bytes = File.ReadAllBytes(dir["ok.safetensors"]);
        File.WriteAllBytes(dir["cut.safetensors"], bytes[..^10]);
        Assert.Contains("cut.safetensors", Assert.Throws<BadInputException>(() => SafeTensors.Read(dir["cut.safetensors"])).Message);
    }

    [Fact]
    public void Gpt2_weights_use_hugging_face_names_and_conv1d_layout_and_load_back_exactly()
    {
        using var dir = new TempDir();
        var config = TorchSetup.TinyGpt2();
        using var model = CausalLM.Create(config, seed: 1);
        ModelCheckpoint.WriteModel(dir.Path, model, "byte");
        var (t, meta) = SafeTensors.Read(dir[ModelCheckpoint.ModelFile]);
        Assert.Equal("byte", meta["supercluster.tokenizer"]);
        Assert.Contains("wte.weight", t.Keys);
        Assert.Contains("h.1.mlp.c_fc.weight", t.Keys);
        // HF Conv1D: [in, out]
        Assert.Equal(new long[] { config.NEmbd, 3 * config.NEmbd }, t["h.0.attn.c_attn.weight"].shape);
        Assert.DoesNotContain(t.Keys, k => k.StartsWith("lm_head"));

        using var other = CausalLM.Create(config, seed: 2);
        ModelCheckpoint.LoadWeights(other, dir[ModelCheckpoint.ModelFile]);
        foreach (var ((n1, p1), (_, p2)) in model.named_parameters().Zip(other.named_parameters()))
            Assert.True(p1.eq(p2).all().item<bool>(), n1);

        using var bigger = CausalLM.Create(config with { NEmbd = 16, FfnHidden = 64 }, seed: 0);
        var e = Assert.Throws<BadInputException>(() => ModelCheckpoint.LoadWeights(bigger, dir[ModelCheckpoint.ModelFile]));
        Assert.Contains("wte.weight", e.Message);
    }

    [Fact]
    public void Hugging_face_files_with_a_transformer_prefix_load_too()
    {
        // transformers' GPT2LMHeadModel.save_pretrained writes "transformer.h.0…" plus "lm_head.weight".
        using var dir = new TempDir();
        var config = TorchSetup.TinyGpt2();
        using var source = CausalLM.Create(config, seed: 3);
        var hf = source.HfNames;
        var tensors = source.named_parameters()
            .Select(p => ("transformer." + hf[p.name].HfName, hf[p.name].Transposed ? p.parameter.t() : (Tensor)p.parameter))
            .Append(("lm_head.weight", (Tensor)source.named_parameters().First(p => p.name == "wte.weight").parameter));
        SafeTensors.Write(dir["hf.safetensors"], tensors);
        using var target = CausalLM.Create(config, seed: 4);
        ModelCheckpoint.LoadWeights(target, dir["hf.safetensors"]);
        using var idx = randint(0, config.VocabSize, [1, 8]);
        Assert.True(source.forward(idx).eq(target.forward(idx)).all().item<bool>());
    }

    [Fact]
    public void Store_chooses_the_newest_complete_checkpoint_and_skips_corrupt_and_partial_ones()
    {
        using var run = new TempDir();
        var store = new CheckpointStore(run.Path);
        foreach (var step in new long[] { 10, 20, 30 })
            store.Save(step, d => File.WriteAllText(Path.Combine(d, "data.bin"), $"payload {step}"));
        Assert.EndsWith("step_0000030", store.Latest());

        // A write that died before its manifest: a temp dir, never a candidate.
        Directory.CreateDirectory(Path.Combine(store.Root, ".tmp-step_0000040-999"));
        // A directory with the right name but no manifest (e.g. copied by hand, half done).
        Directory.CreateDirectory(Path.Combine(store.Root, "step_0000050"));
        // Flip one byte of the newest complete checkpoint.
        File.WriteAllText(Path.Combine(store.Root, "step_0000030", "data.bin"), "payload 3X");

        var warnings = new List<string>();
        Assert.EndsWith("step_0000020", store.Latest(warnings.Add));
        Assert.Contains(warnings, w => w.Contains("step_0000030") && w.Contains("checksum"));
        Assert.Contains(warnings, w => w.Contains("step_0000050") && w.Contains("manifest"));

        store.Prune(keep: 1);
        Assert.False(Directory.Exists(Path.Combine(store.Root, "step_0000010")));
        Assert.True(Directory.Exists(Path.Combine(store.Root, "step_0000020")));
        Assert.False(Directory.Exists(Path.Combine(store.Root, ".tmp-step_0000040-999")));
    }

    [Fact]
    public void A_crash_before_the_manifest_leaves_no_candidate()
    {
        using var run = new TempDir();
        var store = new CheckpointStore(run.Path);
        store.Save(1, d => File.WriteAllText(Path.Combine(d, "a"), "1"));
        Assert.Throws<IOException>(() => store.Save(2, d => File.WriteAllText(Path.Combine(d, "a"), "2"), beforeManifest: () => throw new IOException("disk gone")));
        Assert.EndsWith("step_0000001", store.Latest());
        Assert.Single(store.Complete());
    }
}
