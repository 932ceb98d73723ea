using System.Buffers.Binary;
using System.Globalization;
using System.IO.Hashing;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Supercluster.Runtime;
using System.Text;

namespace Supercluster.Tokenization;

/// <summary>
/// Fast GPT-2 byte-level BPE encoder: the same ids as Microsoft.ML.Tokenizers' tiktoken encoder with
/// <see cref="Gpt2Ranks.Pattern"/> (kept as the reference and tested against it), about 3–4× its speed, because
/// <c>prepare</c> spends most of its time here.
/// <list type="bullet">
/// <item>A hand-written pre-tokenizer equivalent to GPT-2's regex on UTF-16 characters, classified as .NET's Regex does
/// (<c>\p{L}</c>, <c>\p{N}</c>, <c>\s</c> by <see cref="char.GetUnicodeCategory(char)"/>; a surrogate is neither).</item>
/// <item>A per-thread cache of piece → ids keyed by the characters (pieces repeat heavily), looked up by span.</item>
/// <item>Merges over a small array of token ids: adjacent (left, right) → merged id in one table, as GPT-2's rank is its id.</item>
/// </list>
/// Pieces longer than <see cref="MaxMergeBytes"/> (quadratic merges) go to the reference encoder, piece by piece.
/// </summary>
public sealed class Gpt2BpeEncoder
{
    const int MaxMergeBytes = 1024;
    const int MaxCachedChars = 64;
    const int MaxCacheEntries = 1 << 16;
    const int MaxKeptOutput = 1 << 20;

    readonly Dictionary<string, int> _vocab;                // token bytes as Latin-1 characters → id
    readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> _vocabBySpan;
    readonly Dictionary<long, int> _merges = new(PairKeyComparer.Instance);           // (left id << 32 | right id) → id of their concatenation
    readonly int[] _byteToken = new int[256];
    readonly Func<string, int[]> _longPiece;
    readonly string _special;
    readonly ThreadLocal<State> _state;

    /// <summary>
    /// <paramref name="ranks"/>: tiktoken text lines (<c>base64 rank</c>); <paramref name="specialText"/>: the special
    /// token's text (<c>&lt;|endoftext|&gt;</c>); <paramref name="longPiece"/> encodes one
    /// pre-tokenized piece too long for the array merge (the reference encoder).
    /// </summary>
    public Gpt2BpeEncoder(IEnumerable<string> ranks, string specialText, Func<string, int[]> longPiece)
        : this(ParseRanks(ranks), null, specialText, longPiece) { }

    Gpt2BpeEncoder(Dictionary<string, int> vocab, Dictionary<long, int>? merges, string specialText, Func<string, int[]> longPiece)
    {
        _special = specialText;
        _longPiece = longPiece;
        _vocab = vocab;
        _vocabBySpan = _vocab.GetAlternateLookup<ReadOnlySpan<char>>();
        Array.Fill(_byteToken, -1);
        foreach (var (key, id) in _vocab)
            if (key.Length == 1) _byteToken[key[0]] = id;
        if (merges is not null) _merges = merges;
        else
            foreach (var (key, id) in _vocab)
                for (int k = 1; k < key.Length; k++)
                    if (_vocabBySpan.TryGetValue(key.AsSpan(0, k), out var l) && _vocabBySpan.TryGetValue(key.AsSpan(k), out var r))
                        _merges[Pair(l, r)] = id;
        if (Array.IndexOf(_byteToken, -1) >= 0) throw new InvalidDataException("GPT-2 ranks lack a single-byte token");
        MaxId = _vocab.Values.Max();
        _state = new ThreadLocal<State>(() => new State());
    }

    static Dictionary<string, int> ParseRanks(IEnumerable<string> ranks)
    {
        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var line in ranks)
        {
            int sp = line.IndexOf(' ');
            if (sp <= 0) continue;
            var bytes = Convert.FromBase64String(line[..sp]);
            vocab[Latin1(bytes)] = int.Parse(line.AsSpan(sp + 1), CultureInfo.InvariantCulture);
        }
        return vocab;
    }

    // ---- tables cache: parsing the text ranks and deriving the merges is most of the load time ----

    const ulong TablesMagic = 0x3142_5045_4232_4353; // "SC2BEPB1" little-endian: format 1 of the tables file

    /// <summary>
    /// The parsed tables (token bytes → id, (left, right) → id), tagged with <paramref name="source"/> (the text
    /// ranks they were made from: its length and xxHash3) and checksummed, for <see cref="ReadTables"/>.
    /// </summary>
    public byte[] WriteTables(ReadOnlySpan<byte> source)
    {
        var body = new MemoryStream();
        Span<byte> b = stackalloc byte[12];
        BinaryPrimitives.WriteInt32LittleEndian(b, _vocab.Count);
        body.Write(b[..4]);
        foreach (var (key, id) in _vocab)
        {
            BinaryPrimitives.WriteInt32LittleEndian(b, id);
            BinaryPrimitives.WriteUInt16LittleEndian(b[4..], checked((ushort)key.Length));
            body.Write(b[..6]);
            foreach (var c in key) body.WriteByte((byte)c);
        }
        BinaryPrimitives.WriteInt32LittleEndian(b, _merges.Count);
        body.Write(b[..4]);
        foreach (var (pair, id) in _merges)
        {
            BinaryPrimitives.WriteInt64LittleEndian(b, pair);
            BinaryPrimitives.WriteInt32LittleEndian(b[8..], id);
            body.Write(b);
        }
        var bodyBytes = body.ToArray();
        var file = new byte[24 + bodyBytes.Length + 8];
        BinaryPrimitives.WriteUInt64LittleEndian(file, TablesMagic);
        BinaryPrimitives.WriteInt64LittleEndian(file.AsSpan(8), source.Length);
        BinaryPrimitives.WriteUInt64LittleEndian(file.AsSpan(16), XxHash3.HashToUInt64(source));
        bodyBytes.CopyTo(file, 24);
        BinaryPrimitives.WriteUInt64LittleEndian(file.AsSpan(24 + bodyBytes.Length), XxHash3.HashToUInt64(bodyBytes));
        return file;
    }

    /// <summary>
    /// The encoder of tables written by <see cref="WriteTables"/> from the same <paramref name="source"/>; null when
    /// <paramref name="tables"/> is of another format or source, or damaged (the caller rebuilds them).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static Gpt2BpeEncoder? ReadTables(ReadOnlySpan<byte> tables, ReadOnlySpan<byte> source, string specialText, Func<string, int[]> longPiece)
    {
        if (tables.Length < 40 || BinaryPrimitives.ReadUInt64LittleEndian(tables) != TablesMagic
            || BinaryPrimitives.ReadInt64LittleEndian(tables[8..]) != source.Length
            || BinaryPrimitives.ReadUInt64LittleEndian(tables[16..]) != XxHash3.HashToUInt64(source))
            return null;
        var body = tables[24..^8];
        if (BinaryPrimitives.ReadUInt64LittleEndian(tables[^8..]) != XxHash3.HashToUInt64(body)) return null;
        try
        {
            int n = BinaryPrimitives.ReadInt32LittleEndian(body), at = 4;
            var vocab = new Dictionary<string, int>(n, StringComparer.Ordinal);
            for (int i = 0; i < n; i++)
            {
                int id = BinaryPrimitives.ReadInt32LittleEndian(body[at..]), len = BinaryPrimitives.ReadUInt16LittleEndian(body[(at + 4)..]);
                vocab.Add(Encoding.Latin1.GetString(body.Slice(at + 6, len)), id);
                at += 6 + len;
            }
            int m = BinaryPrimitives.ReadInt32LittleEndian(body[at..]);
            at += 4;
            var merges = new Dictionary<long, int>(m, PairKeyComparer.Instance);
            for (int i = 0; i < m; i++, at += 12)
                merges.Add(BinaryPrimitives.ReadInt64LittleEndian(body[at..]), BinaryPrimitives.ReadInt32LittleEndian(body[(at + 8)..]));
            return at == body.Length ? new Gpt2BpeEncoder(vocab, merges, specialText, longPiece) : null;
        }
        catch (Exception e) when (e is ArgumentException or IndexOutOfRangeException) { return null; } // a checksum collision on damage: rebuild
    }

    /// <summary>Largest token id of the ranks (special tokens not included).</summary>
    public int MaxId { get; }

    /// <summary>
    /// Ids of <paramref name="text"/>. Like the reference, the special token's text splits the text into segments
    /// pre-tokenized separately (a segment's end counts as the end of the text for <c>(?!\S)</c>) and is itself one
    /// piece encoded as ordinary bytes, not as the special id.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // a prepare run is seconds long: no slow first tier
    public int[] Encode(string text)
    {
        var st = _state.Value!;
        st.Output.Clear();
        var rest = text.AsSpan();
        while (true)
        {
            int at = rest.IndexOf(_special, StringComparison.Ordinal);
            EncodeOrdinary(at < 0 ? rest : rest[..at], st);
            if (at < 0) break;
            Piece(rest.Slice(at, _special.Length), st);
            rest = rest[(at + _special.Length)..];
        }
        int[] ids = [.. st.Output];
        if (st.Output.Capacity > MaxKeptOutput) st.Output = new(1 << 12); // a huge document's buffer is not kept per thread
        return ids;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // a prepare run is seconds long: no slow first tier
    void EncodeOrdinary(ReadOnlySpan<char> s, State st)
    {
        for (int i = 0; i < s.Length;)
        {
            int end = PieceEnd(s, i);
            Piece(s[i..end], st);
            i = end;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // a prepare run is seconds long: no slow first tier
    void Piece(ReadOnlySpan<char> piece, State st)
    {
        if (piece.Length <= MaxCachedChars && st.CacheBySpan.TryGetValue(piece, out var cached))
        {
            // Most pieces are one token: Add, not AddRange's interface-dispatched copy.
            if (cached.Length == 1) st.Output.Add(cached[0]);
            else st.Output.AddRange(cached);
            return;
        }
        int start = st.Output.Count;
        EncodePiece(piece, st);
        if (piece.Length <= MaxCachedChars)
        {
            if (st.Cache.Count >= MaxCacheEntries) st.Cache.Clear(); // bounded; frequent pieces come back at once
            st.Cache[piece.ToString()] = CollectionsMarshal.AsSpan(st.Output)[start..].ToArray();
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // a prepare run is seconds long: no slow first tier
    void EncodePiece(ReadOnlySpan<char> piece, State st)
    {
        bool surrogates = piece.IndexOfAnyInRange('\uD800', '\uDFFF') >= 0;
        int n = surrogates ? 4 * piece.Length : Encoding.UTF8.GetByteCount(piece);
        if (n > MaxMergeBytes) { st.Output.AddRange(_longPiece(piece.ToString())); return; }
        Span<byte> bytes = stackalloc byte[n];
        n = surrogates ? Wtf8(piece, bytes) : Encoding.UTF8.GetBytes(piece, bytes);
        bytes = bytes[..n];
        Span<char> latin = stackalloc char[n];
        for (int k = 0; k < n; k++) latin[k] = (char)bytes[k];
        if (_vocabBySpan.TryGetValue(latin, out var whole)) { st.Output.Add(whole); return; } // as tiktoken: a whole-piece token wins
        Span<int> ids = stackalloc int[n];
        Span<int> merged = stackalloc int[n]; // merged[k]: id of ids[k] + ids[k+1], or int.MaxValue
        for (int k = 0; k < n; k++) ids[k] = _byteToken[bytes[k]];
        for (int k = 0; k + 1 < n; k++) merged[k] = Merge(ids[k], ids[k + 1]);
        int m = n;
        while (m > 1)
        {
            int best = int.MaxValue, at = -1;
            for (int k = 0; k + 1 < m; k++)
                if (merged[k] < best) { best = merged[k]; at = k; } // lowest rank (= id), leftmost on ties
            if (at < 0) break;
            ids[at] = best;
            ids[(at + 2)..m].CopyTo(ids[(at + 1)..]);
            merged[(at + 2)..m].CopyTo(merged[(at + 1)..]);
            m--;
            if (at > 0) merged[at - 1] = Merge(ids[at - 1], ids[at]);
            merged[at] = at + 1 < m ? Merge(ids[at], ids[at + 1]) : int.MaxValue;
        }
        for (int k = 0; k < m; k++) st.Output.Add(ids[k]);
    }

    /// <summary>
    /// UTF-8, except that an unpaired surrogate becomes the 3-byte form of its code unit (WTF-8), as the reference
    /// encodes it (not U+FFFD).
    /// </summary>
    static int Wtf8(ReadOnlySpan<char> s, Span<byte> dest)
    {
        int n = 0;
        for (int i = 0; i < s.Length; i++)
        {
            int c = s[i];
            if (char.IsHighSurrogate(s[i]) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1]))
            {
                c = char.ConvertToUtf32(s[i], s[++i]);
                dest[n++] = (byte)(0xF0 | (c >> 18));
                dest[n++] = (byte)(0x80 | ((c >> 12) & 0x3F));
                dest[n++] = (byte)(0x80 | ((c >> 6) & 0x3F));
                dest[n++] = (byte)(0x80 | (c & 0x3F));
            }
            else if (c < 0x80) dest[n++] = (byte)c;
            else if (c < 0x800) { dest[n++] = (byte)(0xC0 | (c >> 6)); dest[n++] = (byte)(0x80 | (c & 0x3F)); }
            else
            {
                dest[n++] = (byte)(0xE0 | (c >> 12));
                dest[n++] = (byte)(0x80 | ((c >> 6) & 0x3F));
                dest[n++] = (byte)(0x80 | (c & 0x3F));
            }
        }
        return n;
    }

    int Merge(int left, int right) => _merges.TryGetValue(Pair(left, right), out var id) ? id : int.MaxValue;

    static long Pair(int left, int right) => ((long)left << 32) | (uint)right;

    static string Latin1(byte[] bytes) => string.Create(bytes.Length, bytes, (span, b) => { for (int k = 0; k < b.Length; k++) span[k] = (char)b[k]; });

    /// <summary>
    /// End of the piece starting at <paramref name="i"/> under
    /// <c>'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+</c> (first alternative that matches).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // a prepare run is seconds long: no slow first tier
    public static int PieceEnd(ReadOnlySpan<char> s, int i)
    {
        char c = s[i];
        if (c == '\'' && i + 1 < s.Length)
        {
            char d = s[i + 1];
            if (d is 's' or 't' or 'm' or 'd') return i + 2;
            if (i + 2 < s.Length && ((d == 'r' && s[i + 2] == 'e') || (d == 'v' && s[i + 2] == 'e') || (d == 'l' && s[i + 2] == 'l'))) return i + 3;
        }
        var kind = Classify(c);
        int j = i;
        if (c == ' ' && i + 1 < s.Length && Classify(s[i + 1]) != Kind.Space) { j = i + 1; kind = Classify(s[j]); } // ` ?` then a run
        if (kind != Kind.Space)
        {
            j++;
            while (j < s.Length && Classify(s[j]) == kind) j++;
            return j;
        }
        int e = i + 1;
        while (e < s.Length && Classify(s[e]) == Kind.Space) e++;
        if (e == s.Length) return e;          // \s+(?!\S) up to the end
        return e - i >= 2 ? e - 1 : e;        // \s+(?!\S) leaves the last space to the next word; else \s+
    }

    enum Kind : byte { Letter, Number, Space, Other }

    static readonly Kind[] Ascii = BuildAscii();

    static Kind[] BuildAscii()
    {
        var t = new Kind[128];
        for (int c = 0; c < 128; c++) t[c] = Slow((char)c);
        return t;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)] // per character: as a call it ran at JIT tier 0 early in a run (perf)
    static Kind Classify(char c) => c < 128 ? Ascii[c] : Slow(c);

    /// <summary>As .NET Regex: <c>\s</c> is <see cref="char.IsWhiteSpace(char)"/>; <c>\p{L}</c>/<c>\p{N}</c> by category.</summary>
    static Kind Slow(char c)
    {
        if (char.IsWhiteSpace(c)) return Kind.Space;
        return char.GetUnicodeCategory(c) switch
        {
            UnicodeCategory.UppercaseLetter or UnicodeCategory.LowercaseLetter or UnicodeCategory.TitlecaseLetter
                or UnicodeCategory.ModifierLetter or UnicodeCategory.OtherLetter => Kind.Letter,
            UnicodeCategory.DecimalDigitNumber or UnicodeCategory.LetterNumber or UnicodeCategory.OtherNumber => Kind.Number,
            _ => Kind.Other,
        };
    }

    sealed class State
    {
        public List<int> Output = new(1 << 12);
        public readonly Dictionary<string, int[]> Cache;
        public readonly Dictionary<string, int[]>.AlternateLookup<ReadOnlySpan<char>> CacheBySpan;

        public State()
        {
            // Sized for the most it holds: growing it from empty rehashed every entry ~16 times per worker.
            Cache = new Dictionary<string, int[]>(MaxCacheEntries, StringComparer.Ordinal);
            CacheBySpan = Cache.GetAlternateLookup<ReadOnlySpan<char>>();
        }
    }
}
