using System.Text.Json.Serialization;
using Supercluster.Inference;
using Supercluster.Tokenization;

namespace Supercluster.Data;

/// <summary>What to do with a conversation longer than the sequence length.</summary>
public enum OverlongPolicy { Truncate, Drop }

public sealed record ChatPrepareOptions
{
    public required string OutDir { get; init; }
    public string Tokenizer { get; init; } = "gpt2";
    /// <summary>Tokens per packed sequence: train must use the same --seq-len.</summary>
    public required int SeqLen { get; init; }
    public double ValFraction { get; init; } = 0.05;
    public OverlongPolicy Overlong { get; init; } = OverlongPolicy.Truncate;
    /// <summary>Most tokens per shard (rounded down to whole sequences).</summary>
    public long ShardTokens { get; init; } = 100_000_000;
}

/// <summary>meta.json's <c>chat</c> section: the data is packed chat with loss masks, and how it was packed.</summary>
public sealed record ChatDataInfo
{
    [JsonPropertyName("seq_len")] public int SeqLen { get; init; }
    [JsonPropertyName("loss_mask_version")] public int LossMaskVersion { get; init; } = LossMask.Version;
    [JsonPropertyName("template")] public string Template { get; init; } = "plain-roles";
    [JsonPropertyName("conversations")] public long Conversations { get; init; }
    [JsonPropertyName("truncated")] public long Truncated { get; init; }
    [JsonPropertyName("dropped")] public long Dropped { get; init; }
    [JsonPropertyName("sequences")] public long Sequences { get; init; }
    [JsonPropertyName("trained_tokens")] public long TrainedTokens { get; init; }
}

/// <summary>
/// <c>prepare --format chat</c>: conversations (<see cref="ChatRecords"/>) rendered with the serving template
/// (<see cref="ChatTemplate.RenderTraining"/>), tokenized, each followed by end-of-text, and packed in order into
/// sequences of exactly <c>seq_len</c> tokens (a conversation that does not fit the rest of a sequence starts the next;
/// the gap is end-of-text padding, never trained). Beside each token shard a loss-mask stream (<see cref="LossMask"/>)
/// marks the assistant tokens. Training attends within a conversation only: each end-of-text ends a document
/// (FineTuning/DocumentMask). Every record is read and checked before anything is written; the folder is built under a
/// temporary name and renamed, so a failure leaves nothing.
/// </summary>
public static class ChatPreparer
{
    public static DatasetMeta Run(IReadOnlyList<string> files, ChatPrepareOptions o, Action<string>? log = null)
    {
        if (o.SeqLen < 2) throw new BadInputException($"--seq-len {o.SeqLen}: expected at least 2 tokens per packed sequence");
        if (o.ValFraction is < 0 or >= 1) throw new BadInputException($"--val-fraction {o.ValFraction}: expected 0 ≤ f < 1");
        if (files.Count == 0) throw new BadInputException("--input: no JSONL files given");
        var tokenizer = Tokenizers.Create(o.Tokenizer);
        var conversations = files.SelectMany(ChatRecords.Read).ToList();   // all checked before anything is written
        if (conversations.Count == 0) throw new BadInputException($"--input {string.Join(" ", files)}: no records");

        int eot = tokenizer.EotToken;
        var splits = new Dictionary<string, Packer> { ["train"] = new(o.SeqLen, eot), ["val"] = new(o.SeqLen, eot) };
        long truncated = 0, dropped = 0;
        for (int i = 0; i < conversations.Count; i++)
        {
            var (tokens, mask) = Tokenize(conversations[i], tokenizer);
            if (tokens.Count > o.SeqLen)
            {
                if (o.Overlong == OverlongPolicy.Drop) { dropped++; continue; }
                tokens.RemoveRange(o.SeqLen, tokens.Count - o.SeqLen);
                mask.RemoveRange(o.SeqLen, mask.Count - o.SeqLen);
                // Token 0 of a sequence is never a target: a reply that starts only there has nothing left to train.
                if (!mask.Skip(1).Any(m => m != 0)) { dropped++; continue; }
                truncated++;
            }
            splits[o.ValFraction > 0 && Preparer.IsVal(i, o.ValFraction) ? "val" : "train"].Add(tokens, mask);
        }
        if (splits["train"].Conversations == 0)
            throw new BadInputException($"--input: no conversation is left for training ({dropped} of {conversations.Count} dropped as longer than --seq-len {o.SeqLen}; use --overlong truncate or a longer --seq-len)");

        string outDir = Path.GetFullPath(o.OutDir);
        string staging = outDir.TrimEnd('/') + $".tmp-{Environment.ProcessId}";
        if (Directory.Exists(staging)) Directory.Delete(staging, recursive: true);
        Directory.CreateDirectory(staging);
        try
        {
            int version = ShardFormat.VersionFor(tokenizer.VocabSize);
            long perShard = Math.Max(1, o.ShardTokens / o.SeqLen);
            var train = splits["train"].Write(staging, "train", version, perShard);
            var val = splits["val"].Write(staging, "val", version, perShard);
            var meta = new DatasetMeta(tokenizer.Name, tokenizer.VocabSize, eot, train.Sum(s => s.Tokens), val.Sum(s => s.Tokens))
            {
                TokenWidth = ShardFormat.TokenWidth(version),
                TrainDocuments = splits["train"].Conversations,
                ValDocuments = splits["val"].Conversations,
                TrainShards = train,
                ValShards = val,
                Source = string.Join(" ", files),
                Chat = new ChatDataInfo
                {
                    SeqLen = o.SeqLen, Conversations = conversations.Count, Truncated = truncated, Dropped = dropped,
                    Sequences = splits.Values.Sum(p => p.Sequences), TrainedTokens = splits.Values.Sum(p => p.TrainedTokens),
                },
            };
            meta.Save(staging);
            if (Directory.Exists(outDir)) Directory.Delete(outDir, recursive: true);
            Directory.Move(staging, outDir);
            log?.Invoke($"chat        {conversations.Count:N0} conversations ({splits["train"].Conversations:N0} train, {splits["val"].Conversations:N0} val), " +
                $"{truncated:N0} truncated, {dropped:N0} dropped (longer than {o.SeqLen} tokens; --overlong {o.Overlong.ToString().ToLowerInvariant()})");
            log?.Invoke($"packed      {meta.Chat.Sequences:N0} sequences of {o.SeqLen} tokens, {meta.Chat.TrainedTokens:N0} trained (assistant) tokens of {meta.TrainTokens + meta.ValTokens:N0}");
            return meta;
        }
        catch
        {
            if (Directory.Exists(staging)) Directory.Delete(staging, recursive: true);
            throw;
        }
    }

    /// <summary>A conversation's tokens and mask (1 = trained), segment by segment so the mask is exact, then end-of-text (trained when it ends a reply).</summary>
    public static (List<int> Tokens, List<byte> Mask) Tokenize(Conversation c, TextTokenizer tokenizer)
    {
        var tokens = new List<int>();
        var mask = new List<byte>();
        bool lastTrained = false;
        foreach (var (text, trained) in ChatTemplate.RenderTraining(c.Messages))
        {
            var ids = tokenizer.Encode(text);
            tokens.AddRange(ids);
            mask.AddRange(Enumerable.Repeat(trained ? (byte)1 : (byte)0, ids.Length));
            lastTrained = trained;
        }
        tokens.Add(tokenizer.EotToken);
        mask.Add(lastTrained ? (byte)1 : (byte)0);
        return (tokens, mask);
    }

    /// <summary>Packs conversations in order into sequences of exactly seq_len tokens, padded with end-of-text (mask 0).</summary>
    sealed class Packer(int seqLen, int eot)
    {
        readonly List<int> _tokens = [];
        readonly List<byte> _mask = [];
        int Used => _tokens.Count % seqLen;
        public long Conversations { get; private set; }
        public long TrainedTokens { get; private set; }
        public long Sequences => (_tokens.Count + seqLen - 1) / seqLen;

        public void Add(List<int> tokens, List<byte> mask)
        {
            if (Used != 0 && Used + tokens.Count > seqLen) Pad();
            _tokens.AddRange(tokens);
            _mask.AddRange(mask);
            TrainedTokens += mask.Count(m => m != 0);
            Conversations++;
        }

        void Pad()
        {
            int n = seqLen - Used;
            _tokens.AddRange(Enumerable.Repeat(eot, n));
            _mask.AddRange(new byte[n]);
        }

        /// <summary>
        /// Shards of whole sequences plus one end-of-text (mask 0): a row is seq_len + 1 tokens, its last target the
        /// next sequence's first token, which is never trained.
        /// </summary>
        public List<ShardInfo> Write(string dir, string split, int version, long sequencesPerShard)
        {
            if (Used != 0) Pad();
            var shards = new List<ShardInfo>();
            long total = _tokens.Count / seqLen;
            for (long first = 0; first < total; first += sequencesPerShard)
            {
                int start = (int)(first * seqLen), n = (int)(Math.Min(sequencesPerShard, total - first) * seqLen);
                string name = $"{split}_{shards.Count:D6}.bin";
                using (var w = new ShardWriter(Path.Combine(dir, name), version))
                {
                    w.Write(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_tokens).Slice(start, n));
                    w.Write([eot]);
                    w.Commit();
                }
                var mask = new byte[n + 1];
                _mask.CopyTo(start, mask, 0, n);
                LossMask.Write(Path.Combine(dir, LossMask.FileFor(name)), mask);
                shards.Add(new ShardInfo(name, n + 1));
            }
            return shards;
        }
    }
}
