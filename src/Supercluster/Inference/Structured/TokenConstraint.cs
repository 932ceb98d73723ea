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

    /// <summary>Token ids allowed next with <paramref name="remaining"/> tokens left (this one included); null = any token.</summary>
    public int[]? Allowed(int remaining)
    {
        if (_ended) return [_stopToken];
        if (_state is { Next: null } s && s.Top.AcceptsAll) return null;
        var allowed = new List<int>();
        if (ParseState.CanEnd(_state)) allowed.Add(_stopToken);
        if (_state is not null) Walk(_trie.Root, _state, remaining - 1, allowed);
        if (allowed.Count == 0) allowed.Add(_stopToken);   // unreachable with a byte-level vocabulary; end rather than fail
        return allowed.ToArray();
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
