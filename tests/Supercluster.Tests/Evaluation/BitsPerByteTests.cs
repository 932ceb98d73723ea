using System.Text;
using System.Text.Json.Nodes;
using Supercluster.Checkpointing;
using Supercluster.Cli.Commands;
using Supercluster.Evaluation;
using Supercluster.Model;
using Supercluster.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

namespace Supercluster.Tests.Evaluation;

/// <summary>
/// Bits per byte: Σ −ln p over the text's tokens / (ln 2 · UTF-8 bytes), every token scored once (after end-of-text),
/// in windows of any stride; known answers for a uniform model under two tokenizers; bad files refused.
/// </summary>
[Collection("Console")]
public class BitsPerByteTests
{
    // 26 characters: 21 ASCII, 2-byte ï, é, ¥ and 3-byte €, — (33 UTF-8 bytes).
    const string Known = "naïve café: 3 € — or 10 ¥\n";
    const int KnownBytes = 21 + 2 * 3 + 3 * 2;

    public BitsPerByteTests() => TorchSetup.Init();

    static CausalLM Zeroed(ModelConfig config)
    {
        // Every weight zero: the final norm outputs 0, so every logit is 0 and p = 1/V for every token, exactly.
        var model = CausalLM.Create(config, seed: 0);
        using (no_grad()) foreach (var p in model.parameters()) p.zero_();
        return model;
    }

    [Theory]
    [InlineData("byte", "gpt2")]
    [InlineData("byte", "llama")]
    [InlineData("gpt2", "gpt2")]
    public void A_uniform_model_has_log2_vocab_bits_per_token_spread_over_the_bytes(string tokenizer, string family)
    {
        Assert.Equal(KnownBytes, Encoding.UTF8.GetByteCount(Known));
        var tok = Tokenizers.Create(tokenizer);
        var config = family == "gpt2" ? TorchSetup.TinyGpt2(vocab: tok.VocabSize, ctx: 8) : TorchSetup.TinyLlama(vocab: tok.VocabSize, ctx: 8);
        using var model = Zeroed(config);
        var r = BitsPerByte.Measure(model, tok, Known, "known.txt", batchRows: 3, CPU);
        int tokens = tok.Encode(Known).Length;
        Assert.Equal(KnownBytes, r.Bytes);
        Assert.Equal(tokens, r.Tokens);   // every token scored once, the first too (after end-of-text), over 8-token windows
        if (tokenizer == "byte") Assert.Equal(KnownBytes, tokens);
        else Assert.True(tokens < KnownBytes, $"gpt2: {tokens} tokens for {KnownBytes} bytes");
        // fp32 log_softmax of zeros: ln V to ~1e-7 relative.
        Assert.True(Math.Abs(r.Nats - tokens * Math.Log(tok.VocabSize)) <= 1e-5 * r.Nats, $"nats {r.Nats} vs {tokens} ln {tok.VocabSize}");
        Assert.True(Math.Abs(r.Bpb - Math.Log2(tok.VocabSize) * tokens / KnownBytes) <= 1e-5 * r.Bpb, $"bpb {r.Bpb}");
        Assert.Equal(r.Nats / (Math.Log(2) * KnownBytes), r.Bpb, 12);
    }

    [Theory]
    [InlineData(16)]
    [InlineData(5)]
    public void Every_token_is_scored_once_given_its_window_at_any_stride(int stride)
    {
        var config = TorchSetup.TinyGpt2(vocab: 257, ctx: 16);
        using var model = CausalLM.Create(config, seed: 5);
        var tok = Tokenizers.Create("byte");
        string text = string.Concat(Enumerable.Repeat(Known, 2));   // 66 bytes: 5 disjoint windows of 16, 11 at stride 5
        var r = BitsPerByte.Measure(model, tok, text, "t.txt", batchRows: 4, CPU, stride);

        // Independently: token j (1-based after end-of-text s[0]) is read after s[start..j), where start is 0 for the first
        // T tokens and otherwise the first multiple of the stride from which a window of T tokens still reaches j.
        // Tokens of one start share a forward (causal: the logits at j - 1 see exactly s[start..j)).
        int[] s = [tok.EotToken, .. tok.Encode(text)];
        int t = config.SeqLen;
        double nats = 0;
        using (no_grad())
            foreach (var group in Enumerable.Range(1, s.Length - 1).GroupBy(j => j <= t ? 0 : stride * (int)Math.Ceiling((j - t) / (double)stride)))
            {
                using var scope = NewDisposeScope();
                int start = group.Key, last = group.Max();
                Assert.True(last - start <= t, $"token {last} read after {last - start} tokens, more than the window");
                var logp = nn.functional.log_softmax(model.forward(tensor(s[start..last].Select(x => (long)x).ToArray(), [1, last - start])).to(ScalarType.Float64), -1);
                foreach (int j in group) nats -= logp[0, j - 1 - start, s[j]].item<double>();
            }
        Assert.Equal(s.Length - 1, r.Tokens);
        // Same numbers through forwards of other shapes (batched, padded): fp32 agreement, 1e-5 relative.
        Assert.True(Math.Abs(r.Nats - nats) <= 1e-5 * nats, $"stride {stride}: scorer {r.Nats} vs one forward per token {nats}");
    }

    [Fact]
    public void Eval_bpb_reports_per_file_and_refuses_bad_files()
    {
        using var dir = new TempDir();
        var config = TorchSetup.TinyGpt2(vocab: 257, ctx: 16);
        string ckpt;
        using (var model = Zeroed(config)) ckpt = new CheckpointStore(dir["run"]).Save(1, tmp => ModelCheckpoint.WriteModel(tmp, model, "byte"));
        File.WriteAllBytes(dir["bom.txt"], [0xEF, 0xBB, 0xBF, .. Encoding.UTF8.GetBytes(Known)]);
        var (code, output, err) = InProcessCli.Run([EvalCommand.Create()], "eval", "--checkpoint", ckpt, "--bpb", dir["bom.txt"], "--device", "cpu", "--json");
        Assert.True(code == 0, err);
        var bpb = JsonNode.Parse(output)!["bpb"]![0]!;
        Assert.Equal(KnownBytes, (long)bpb["bytes"]!);   // the byte-order mark is not text
        Assert.Equal(Math.Log2(257), (double)bpb["bpb"]!, 4);
        (code, output, err) = InProcessCli.Run([EvalCommand.Create()], "eval", "--checkpoint", ckpt, "--bpb", dir["bom.txt"], "--device", "cpu");
        Assert.True(code == 0, err);
        Assert.Contains($"bom.txt: 8.0056 bits/byte ({KnownBytes} bytes, {KnownBytes} tokens, 5.5491 nats/token)", output);

        File.WriteAllBytes(dir["latin1.txt"], [(byte)'c', (byte)'a', (byte)'f', 0xE9, (byte)'\n']);
        File.WriteAllText(dir["empty.txt"], "");
        foreach (var (args, message) in new (string[], string)[]
        {
            (["--bpb", dir["latin1.txt"]], $"--bpb: '{dir["latin1.txt"]}' is not UTF-8 text (invalid byte at offset 3)"),
            (["--bpb", dir["missing.txt"]], $"--bpb: file '{dir["missing.txt"]}' does not exist"),
            (["--bpb", dir["empty.txt"]], $"--bpb: '{dir["empty.txt"]}' is empty"),
            (["--bpb", dir["bom.txt"], "--bpb-stride", "17"], "--bpb-stride = 17, expected 1..16 (the model's context)"),
        })
        {
            (code, output, err) = InProcessCli.Run([EvalCommand.Create()], ["eval", "--checkpoint", ckpt, "--device", "cpu", .. args]);
            Assert.True(code == 2, $"{string.Join(' ', args)}: exit {code}\n{output}{err}");
            Assert.Equal($"error: {message}", err.Trim());
        }
    }
}
