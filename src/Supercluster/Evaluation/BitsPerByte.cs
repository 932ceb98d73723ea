using System.Text;
using Supercluster.Model;
using Supercluster.Tokenization;
using static TorchSharp.torch;

namespace Supercluster.Evaluation;

/// <summary>Bits per byte of a text: <see cref="Nats"/> over its <see cref="Tokens"/>, per UTF-8 byte.</summary>
public sealed record BpbResult(string Path, double Nats, long Tokens, long Bytes)
{
    /// <summary>Σ −ln p(token) / (ln 2 · UTF-8 bytes).</summary>
    public double Bpb => Nats / (Math.Log(2) * Bytes);
    public double NatsPerToken => Nats / Tokens;
}

/// <summary>
/// Bits per byte (as in The Pile, Gao et al. 2020): the text's total negative log-likelihood in nats over all its
/// tokens, divided by ln 2 times its length in UTF-8 bytes. Per-token loss depends on how much text a token holds;
/// per byte it does not, so models with different tokenizers compare. The text is one document: it is read after
/// end-of-text (what a document follows in training), so its first token is scored too, and in windows of the model's
/// context that advance by <c>stride</c> tokens, each token scored once given the window before it (stride = context:
/// disjoint windows, as validation loss; smaller strides give later windows more context and cost more forwards).
/// </summary>
public static class BitsPerByte
{
    static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    /// <summary>Reads a UTF-8 text file (a byte-order mark is not text); invalid UTF-8 is bad input.</summary>
    public static string ReadText(string path)
    {
        if (!File.Exists(path)) throw new BadInputException($"--bpb: file '{path}' does not exist");
        var bytes = File.ReadAllBytes(path);
        int skip = bytes.AsSpan().StartsWith((byte[])[0xEF, 0xBB, 0xBF]) ? 3 : 0;
        try { return StrictUtf8.GetString(bytes, skip, bytes.Length - skip); }
        catch (DecoderFallbackException e) { throw new BadInputException($"--bpb: '{path}' is not UTF-8 text (invalid byte at offset {e.Index + skip})"); }
    }

    /// <summary>The windows that score every token of <paramref name="tokens"/> once, read after end-of-text.</summary>
    public static List<ScoredRow> Windows(int[] tokens, int eot, int context, int stride)
    {
        if (stride < 1 || stride > context) throw new BadInputException($"--bpb-stride = {stride}, expected 1..{context} (the model's context)");
        int[] s = [eot, .. tokens];   // s[1..] are the targets
        var rows = new List<ScoredRow>();
        if (tokens.Length == 0) return rows;
        for (int a = 0; ; a += stride)
        {
            int end = Math.Min(a + context + 1, s.Length);
            // The first window scores all its targets; later ones only those past the previous window's last.
            int from = a == 0 ? 1 : context + 1 - stride;
            rows.Add(new ScoredRow(s[a..end], from));
            if (end == s.Length) break;
        }
        return rows;
    }

    public static BpbResult Measure(CausalLM model, TextTokenizer tokenizer, string text, string path, int batchRows, Device device, int? stride = null)
    {
        long bytes = Encoding.UTF8.GetByteCount(text);
        if (bytes == 0) throw new BadInputException($"--bpb: '{path}' is empty");
        var tokens = tokenizer.Encode(text);
        int context = model.Config.SeqLen;
        var windows = Windows(tokens, tokenizer.EotToken, context, stride ?? context);
        var scores = LikelihoodScorer.Score(model, windows.Select(w => (IReadOnlyList<ScoredRow>)[w]).ToList(), batchRows, device);
        return new BpbResult(path, scores.Sum(g => g[0].SumNats), scores.Sum(g => (long)g[0].Tokens), bytes);
    }

    /// <summary>One line per text file, as <c>eval</c> prints it.</summary>
    public static string Describe(BpbResult r) =>
        $"{r.Path}: {r.Bpb:F4} bits/byte ({r.Bytes:N0} bytes, {r.Tokens:N0} tokens, {r.NatsPerToken:F4} nats/token)";
}
