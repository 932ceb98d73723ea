using TorchSharp;
using static TorchSharp.torch;

namespace Supercluster.Inference;

/// <summary>
/// Automatic prefix caching (as vLLM's): the keys/values of a prompt's whole blocks of <see cref="BlockTokens"/>
/// tokens, keyed by a hash of the block's tokens chained with its parent block's hash, so a block is found only
/// under the exact same prefix. A new sequence whose prompt starts with cached blocks copies them into its slot and
/// prefills only the rest. Causal attention makes a prefix's keys/values independent of what follows, so a hit
/// computes what a miss would (up to float rounding of different matmul shapes). Bounded by <see cref="MaxBytes"/>,
/// least recently used blocks evicted first; a chain is touched from its last block to its first, so its leaves go
/// before the shared root (the system prompt) does.
/// </summary>
public sealed class PrefixCache : IDisposable
{
    sealed class Block(ulong hash, ulong parent, int[] tokens, Tensor k, Tensor v)
    {
        public readonly ulong Hash = hash, Parent = parent;
        public readonly int[] Tokens = tokens;
        public readonly Tensor K = k, V = v;                    // [L, H_kv, block, hd]
        public LinkedListNode<Block>? Node;
        public long Bytes => 2 * K.NumberOfElements * K.ElementSize;
    }

    readonly Dictionary<ulong, Block> _blocks = [];
    readonly LinkedList<Block> _lru = [];                  // first = most recently used
    readonly int _layers;

    public PrefixCache(int layers, long maxBytes, int blockTokens = 16)
    {
        if (blockTokens < 1) throw new BadInputException($"prefix cache block = {blockTokens} tokens, expected ≥ 1");
        if (maxBytes < 0) throw new BadInputException($"prefix cache size = {maxBytes} bytes, expected ≥ 0");
        _layers = layers;
        MaxBytes = maxBytes;
        BlockTokens = blockTokens;
    }

    public int BlockTokens { get; }
    public long MaxBytes { get; }
    public long Bytes { get; private set; }
    public int Blocks => _blocks.Count;
    /// <summary>Prompt tokens served from the cache / looked up (whole blocks only), for metrics and tests.</summary>
    public long HitTokens { get; private set; }
    public long LookupTokens { get; private set; }

    const ulong Root = 14695981039346656037UL;             // FNV-1a offset basis: the hash "before" the first block

    static ulong Hash(ulong parent, int[] prompt, int start, int n)
    {
        ulong h = parent ^ 0x9E3779B97F4A7C15UL;
        for (int i = start; i < start + n; i++)
        {
            h ^= (uint)prompt[i];
            h *= 1099511628211UL;
        }
        return h;
    }

    /// <summary>The hash of the prompt's first block (null when shorter than a block): sequences that share it share a prefix.</summary>
    public ulong? FirstBlock(int[] prompt) => prompt.Length >= BlockTokens ? Hash(Root, prompt, 0, BlockTokens) : null;

    Block? Find(ulong parent, int[] prompt, int start)
    {
        var h = Hash(parent, prompt, start, BlockTokens);
        return _blocks.TryGetValue(h, out var b) && b.Parent == parent && prompt.AsSpan(start, BlockTokens).SequenceEqual(b.Tokens) ? b : null;
    }

    /// <summary>
    /// Copies the longest run of cached whole blocks that starts the prompt (at most <paramref name="maxTokens"/>
    /// tokens) into <paramref name="slot"/>, sets the slot's length, and returns it (0 = miss).
    /// </summary>
    public int Restore(int[] prompt, int maxTokens, BatchKvCache cache, int slot)
    {
        var chain = new List<Block>();
        ulong parent = Root;
        for (int start = 0; start + BlockTokens <= Math.Min(maxTokens, prompt.Length); start += BlockTokens)
        {
            if (Find(parent, prompt, start) is not { } b) break;
            chain.Add(b);
            parent = b.Hash;
        }
        LookupTokens += Math.Min(maxTokens, prompt.Length) / BlockTokens * BlockTokens;
        if (chain.Count == 0) return 0;
        Touch(chain);
        int n = chain.Count * BlockTokens;
        using (var scope = NewDisposeScope())
        {
            var k = chain.Count == 1 ? chain[0].K : cat(chain.Select(b => b.K).ToArray(), 2);   // [L, H, n, hd]
            var v = chain.Count == 1 ? chain[0].V : cat(chain.Select(b => b.V).ToArray(), 2);
            for (int l = 0; l < _layers; l++) cache.Write(l, slot, 0, k[l], v[l]);
        }
        cache.SetLength(slot, n);
        HitTokens += n;
        return n;
    }

    /// <summary>Stores the whole blocks of <paramref name="prompt"/>[0..<paramref name="filled"/>) held in <paramref name="slot"/> that are not cached yet.</summary>
    public void Store(int[] prompt, int filled, BatchKvCache cache, int slot)
    {
        var chain = new List<Block>();
        ulong parent = Root;
        int start = 0;
        for (; start + BlockTokens <= filled && Find(parent, prompt, start) is { } found; start += BlockTokens)
        {
            chain.Add(found);
            parent = found.Hash;
        }
        Touch(chain);                                               // what is cached already moves to the front
        var keep = chain.ToHashSet();
        for (; start + BlockTokens <= filled; start += BlockTokens)
        {
            var h = Hash(parent, prompt, start, BlockTokens);
            if (_blocks.ContainsKey(h)) break;                      // a hash collision: leave the existing block alone
            long bytes = 2L * _layers * cache.BlockElements(BlockTokens) * cache.ElementSize;
            while (Bytes + bytes > MaxBytes && _lru.Last is { } oldest && !keep.Contains(oldest.Value)) Evict(oldest.Value);
            if (Bytes + bytes > MaxBytes) break;                    // only this prompt's own chain is left
            Block b;
            using (var scope = NewDisposeScope())
            {
                var ks = new Tensor[_layers];
                var vs = new Tensor[_layers];
                for (int l = 0; l < _layers; l++) (ks[l], vs[l]) = cache.View(l, slot, start, BlockTokens);
                b = new Block(h, parent, prompt[start..(start + BlockTokens)], stack(ks).DetachFromDisposeScope(), stack(vs).DetachFromDisposeScope());
            }
            _blocks[h] = b;
            Bytes += b.Bytes;
            chain.Add(b);
            keep.Add(b);
            parent = h;
        }
        Touch(chain);
    }

    /// <summary>Most recent first: the chain's first block ends at the front, its last block just behind the earlier ones.</summary>
    void Touch(List<Block> chain)
    {
        for (int i = chain.Count - 1; i >= 0; i--)
        {
            var b = chain[i];
            if (b.Node is not null) _lru.Remove(b.Node);
            b.Node = _lru.AddFirst(b);
        }
    }

    void Evict(Block b)
    {
        if (b.Node is not null) _lru.Remove(b.Node);
        b.Node = null;
        _blocks.Remove(b.Hash);
        Bytes -= b.Bytes;
        b.K.Dispose();
        b.V.Dispose();
    }

    public void Clear()
    {
        while (_lru.First is { } n) Evict(n.Value);
    }

    public void Dispose() => Clear();
}
