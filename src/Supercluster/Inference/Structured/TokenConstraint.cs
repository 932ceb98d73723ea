using System.Runtime.CompilerServices;
using Supercluster.Tokenization;

namespace Supercluster.Inference.Structured;

/// <summary>
/// Every token's bytes in a trie, built once per tokenizer: the mask walks the trie with the parser state, so tokens
/// that share a prefix share the work (a dead prefix prunes all its tokens at once). Special tokens are not in it.
/// </summary>
public sealed class TokenTrie
{
    public sealed class TrieNode
    {
        public readonly Dictionary<byte, TrieNode> Children = [];
        public List<int>? Tokens;
    }

    public TrieNode Root { get; } = new();
    public int VocabSize { get; }
    /// <summary>Each token's bytes (empty for special tokens).</summary>
    public byte[][] Bytes { get; }
    /// <summary>Token masks per parser state, shared by every constraint over this vocabulary.</summary>
    public MaskCache Masks { get; } = new();

    static readonly ConditionalWeakTable<TextTokenizer, TokenTrie> Cache = new();

    public static TokenTrie For(TextTokenizer tokenizer) => Cache.GetValue(tokenizer, t => new TokenTrie(t));

    TokenTrie(TextTokenizer tokenizer)
    {
        VocabSize = tokenizer.VocabSize;
        Bytes = new byte[VocabSize][];
        for (int id = 0; id < tokenizer.VocabSize; id++)
        {
            Bytes[id] = [];
            if (id == tokenizer.EotToken) continue;
            byte[] bytes;
            try { bytes = tokenizer.TokenBytes(id); } catch (Exception) { continue; }   // holes in a vocabulary
            Bytes[id] = bytes;
            if (bytes.Length == 0) continue;
            var node = Root;
            foreach (var b in bytes)
            {
                if (!node.Children.TryGetValue(b, out var child)) node.Children[b] = child = new TrieNode();
                node = child;
            }
            (node.Tokens ??= []).Add(id);
        }
    }
}

/// <summary>
/// The trie walk's result per parser state (<see cref="StateKey"/>): every token the state accepts with the bytes it
/// still needs after it, sorted by that need, so a mask for any budget is a prefix. A walk over GPT-2's 50k tokens
/// inside a string costs ~20 ms; the states of a JSON value repeat (inside any unbounded string, between values, in
/// json_object mode across requests), so most steps become a lookup. Least recently used states go first beyond
/// <see cref="MaxTokens"/> stored tokens in all (8 bytes each).
/// </summary>
public sealed class MaskCache
{
    /// <summary>32 MB: ~80 whole-vocabulary GPT-2 masks, thousands of narrow ones.</summary>
    public const long MaxTokens = 4L << 20;

    public sealed record Entry(int[] Tokens, int[] Need);

    readonly Dictionary<StateKey, LinkedListNode<(StateKey Key, Entry Entry)>> _map = [];
    readonly LinkedList<(StateKey Key, Entry Entry)> _lru = [];        // first = most recently used
    long _tokens;

    public int Count { get { lock (_map) return _map.Count; } }
    public long Hits { get; private set; }
    public long Misses { get; private set; }

    public Entry GetOrAdd(StateKey key, Func<Entry> walk)
    {
        lock (_map)
        {
            if (_map.TryGetValue(key, out var node))
            {
                _lru.Remove(node);
                _lru.AddFirst(node);
                Hits++;
                return node.Value.Entry;
            }
        }
        var entry = walk();                                              // outside the lock: other schedulers keep going
        lock (_map)
        {
            Misses++;
            if (_map.ContainsKey(key) || entry.Tokens.Length > MaxTokens) return entry;
            _map[key] = _lru.AddFirst((key, entry));
            _tokens += entry.Tokens.Length;
            while (_tokens > MaxTokens && _lru.Last is { } old)
            {
                _lru.RemoveLast();
                _map.Remove(old.Value.Key);
                _tokens -= old.Value.Entry.Tokens.Length;
            }
        }
        return entry;
    }
}

/// <summary>
/// Constrained decoding of one sequence: the tokens allowed next are those whose bytes keep the grammar's parser in a
/// valid state and leave enough budget to close the value (<see cref="ParseState.MinRemaining"/> bytes ≤ tokens left
/// after this one; every byte is a token in byte-level vocabularies, so the shortest completion always fits); the stop
/// token is allowed exactly when the value may end, and is the only choice once nothing can follow.
/// </summary>
public sealed class TokenConstraint
{
    readonly TokenTrie _trie;
    readonly int _stopToken;
    ParseState? _state;
    bool _ended;

    public TokenConstraint(GrammarNode root, TokenTrie trie, int stopToken)
    {
        _trie = trie;
        _stopToken = stopToken;
        _state = ParseState.Of(root.Start(0));
        MinLength = root.MinLength;
    }

    /// <summary>Fewest tokens any output takes (the request's max_tokens must allow it).</summary>
    public int MinLength { get; }

    /// <summary>
    /// Token ids allowed next with <paramref name="remaining"/> tokens left (this one included); null = any token. The
    /// state's walk comes from the trie's <see cref="MaskCache"/>; the same set as <see cref="AllowedUncached"/>, in
    /// another order.
    /// </summary>
    public int[]? Allowed(int remaining)
    {
        if (_ended) return [_stopToken];
        if (_state is { Next: null } s && s.Top.AcceptsAll) return null;
        bool canEnd = ParseState.CanEnd(_state);
        if (_state is null) return [_stopToken];
        var state = _state;
        var entry = _trie.Masks.GetOrAdd(StateKey.Of(state), () => WalkAll(state));
        // Tokens whose need fits the budget after this one: a prefix of the need-sorted list.
        int n = UpperBound(entry.Need, remaining - 1);
        if (n == 0) return [_stopToken];                   // canEnd or not: unreachable with a byte-level vocabulary; end rather than fail
        var allowed = new int[n + (canEnd ? 1 : 0)];
        if (canEnd) allowed[0] = _stopToken;
        Array.Copy(entry.Tokens, 0, allowed, canEnd ? 1 : 0, n);
        return allowed;
    }

    /// <summary>The allowed tokens by walking the trie from the state every time (the reference for the cached path).</summary>
    public int[]? AllowedUncached(int remaining)
    {
        if (_ended) return [_stopToken];
        if (_state is { Next: null } s && s.Top.AcceptsAll) return null;
        var allowed = new List<int>();
        if (ParseState.CanEnd(_state)) allowed.Add(_stopToken);
        if (_state is not null) Walk(_trie.Root, _state, remaining - 1, allowed);
        if (allowed.Count == 0) allowed.Add(_stopToken);   // unreachable with a byte-level vocabulary; end rather than fail
        return allowed.ToArray();
    }

    /// <summary>Index of the first entry above <paramref name="budget"/> in ascending <paramref name="need"/>.</summary>
    static int UpperBound(int[] need, int budget)
    {
        int lo = 0, hi = need.Length;
        while (lo < hi)
        {
            int mid = (lo + hi) >>> 1;
            if (need[mid] <= budget) lo = mid + 1; else hi = mid;
        }
        return lo;
    }

    /// <summary>Every token the state accepts, with the bytes it needs after it, in ascending need (stable: trie order within one need).</summary>
    MaskCache.Entry WalkAll(ParseState state)
    {
        var found = new List<(int Token, int Need)>();
        WalkAll(_trie.Root, state, found);
        var sorted = found.OrderBy(f => f.Need).ToArray();
        return new MaskCache.Entry(sorted.Select(f => f.Token).ToArray(), sorted.Select(f => f.Need).ToArray());
    }

    static void WalkAll(TokenTrie.TrieNode node, ParseState state, List<(int, int)> found)
    {
        foreach (var (b, child) in node.Children)
        {
            if (ParseState.Feed(state, b, out var next) != ParseState.Outcome.Consumed) continue;
            if (child.Tokens is not null)
            {
                int need = ParseState.MinRemaining(next);
                foreach (var t in child.Tokens) found.Add((t, need));
            }
            if (next is not null && child.Children.Count > 0) WalkAll(child, next, found);
        }
    }

    static void Walk(TokenTrie.TrieNode node, ParseState state, int budget, List<int> allowed)
    {
        foreach (var (b, child) in node.Children)
        {
            if (ParseState.Feed(state, b, out var next) != ParseState.Outcome.Consumed) continue;
            if (child.Tokens is not null && ParseState.MinRemaining(next) <= budget) allowed.AddRange(child.Tokens);
            if (next is not null && child.Children.Count > 0) Walk(child, next, budget, allowed);
        }
    }

    /// <summary>Advances past a chosen token (which must have been allowed).</summary>
    public void Accept(int token)
    {
        if (token == _stopToken || _ended) { _ended = true; return; }
        foreach (var b in _trie.Bytes[token])
            if (ParseState.Feed(_state, b, out _state) != ParseState.Outcome.Consumed)
                throw new InvalidOperationException($"token {token} was not allowed by the grammar");
        if (_state is null) _ended = true;
    }
}
