using System.Text;

namespace Supercluster.Tokenization;

/// <summary>UTF-8 bytes as tokens 0..255 plus EOT = 256: no vocabulary files, handy for tests and tiny models.</summary>
public sealed class ByteTokenizer : TextTokenizer
{
    public override string Name => "byte";
    public override int VocabSize => 257;
    public override int EotToken => 256;

    public override int[] Encode(string text)
    {
        var bytes = Encoding.UTF8.GetBytes(text);
        var ids = new int[bytes.Length];
        for (int i = 0; i < bytes.Length; i++) ids[i] = bytes[i];
        return ids;
    }

    public override string Decode(ReadOnlySpan<int> tokens)
    {
        var sb = new StringBuilder();
        var bytes = new List<byte>(tokens.Length);
        foreach (var t in tokens)
        {
            if (t == EotToken) { Flush(); sb.Append("<|endoftext|>"); }
            else bytes.Add(checked((byte)t));
        }
        Flush();
        return sb.ToString();

        void Flush() // Encoding.UTF8 replaces invalid sequences with U+FFFD
        {
            sb.Append(Encoding.UTF8.GetString(bytes.ToArray()));
            bytes.Clear();
        }
    }

    public override byte[] TokenBytes(int token) =>
        token == EotToken ? Encoding.UTF8.GetBytes("<|endoftext|>") : [checked((byte)token)];
}
