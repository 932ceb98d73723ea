using System.Text;

namespace Supercluster.Inference.Structured;

/// <summary>
/// A compiled grammar node: what one JSON value (or a fixed text around it) may look like. <see cref="Start"/> makes the
/// frame that parses it byte by byte; <see cref="MinLength"/> is the fewest bytes that complete it, which lets the
/// constraint close every value before the token budget runs out.
/// </summary>
public abstract class GrammarNode
{
    /// <summary>Nesting allowed inside free JSON (json_object mode, untyped values): deeper values are scalars.</summary>
    public const int MaxFreeDepth = 8;

    public abstract int MinLength { get; }
    public abstract Frame Start(int depth);
}

/// <summary>One parser frame: immutable, so a state (a stack of frames) can be branched for every token cheaply.</summary>
public abstract class Frame
{
    public abstract Step Feed(byte b);
    /// <summary>The value may end here (a number after a digit): the next byte may belong to the parent.</summary>
    public virtual bool CanEnd => false;
    /// <summary>Fewest bytes that finish this frame, children already on the stack above it not counted.</summary>
    public abstract int MinRemaining { get; }
    /// <summary>Every byte sequence is accepted from here on (free text): no mask needed.</summary>
    public virtual bool AcceptsAll => false;
    /// <summary>A child frame above this one finished (lets an object learn the key it just read).</summary>
    public virtual Frame ChildDone(Frame child) => this;
    /// <summary>
    /// Appends what decides this frame's future — the bytes it accepts from here, the frames it makes, their
    /// <see cref="MinRemaining"/> — to <paramref name="key"/> (a <see cref="StateKey"/>): states with equal keys allow the
    /// same tokens, so a token mask is computed once per key. Counters that no longer matter are clamped (a string past
    /// its minLength with no maxLength is the same state at every length). Default: the frame itself (never shared).
    /// </summary>
    public virtual void AddKey(List<object?> key) => key.Add(this);

    /// <summary>A set of strings (keys already written) as one key part, by content.</summary>
    protected static string? SetKey(IEnumerable<string>? set) => set is null ? null : string.Join('\0', set.Order(StringComparer.Ordinal));
}

/// <summary>
/// A parser state's identity for caching its token mask: each frame's type and <see cref="Frame.AddKey"/> parts, top
/// first; parts compare with <see cref="object.Equals(object?, object?)"/> (values by value, grammar nodes by reference).
/// </summary>
public sealed class StateKey : IEquatable<StateKey>
{
    readonly object?[] _parts;
    readonly int _hash;

    StateKey(object?[] parts)
    {
        _parts = parts;
        var h = new HashCode();
        foreach (var p in parts) h.Add(p);
        _hash = h.ToHashCode();
    }

    public static StateKey Of(ParseState? s)
    {
        var parts = new List<object?>();
        for (; s is not null; s = s.Next)
        {
            parts.Add(s.Top.GetType());
            s.Top.AddKey(parts);
        }
        return new StateKey(parts.ToArray());
    }

    public bool Equals(StateKey? other) => other is not null && _hash == other._hash && _parts.Length == other._parts.Length
        && _parts.AsSpan().SequenceEqual(other._parts, EqualityComparer<object?>.Default);
    public override bool Equals(object? obj) => Equals(obj as StateKey);
    public override int GetHashCode() => _hash;
}

public enum StepKind { Reject, Stay, Push, Pop }

/// <summary>
/// What a frame does with a byte. Stay: replace the frame (consumed unless <see cref="Refeed"/>); Push: replace the frame
/// with <see cref="Self"/> and push <see cref="Child"/> (the byte goes to the child when <see cref="Refeed"/>); Pop: the
/// frame is done (the byte goes to the parent when <see cref="Refeed"/>).
/// </summary>
public readonly record struct Step(StepKind Kind, Frame? Self = null, Frame? Child = null, bool Refeed = false)
{
    public static readonly Step Reject = new(StepKind.Reject);
    public static readonly Step Done = new(StepKind.Pop);
    public static readonly Step DoneRefeed = new(StepKind.Pop, Refeed: true);
    public static Step To(Frame f, bool refeed = false) => new(StepKind.Stay, f, Refeed: refeed);
    public static Step PushTo(Frame self, Frame child, bool refeed = false) => new(StepKind.Push, self, child, refeed);
}

/// <summary>An immutable stack of frames (top first); null is the empty stack (the value is complete).</summary>
public sealed class ParseState(Frame top, ParseState? next)
{
    public Frame Top { get; } = top;
    public ParseState? Next { get; } = next;

    public enum Outcome { Rejected, Consumed, EndedBefore }

    /// <summary>Feeds one byte. EndedBefore: the value ended before this byte (which belongs to whatever follows it).</summary>
    public static Outcome Feed(ParseState? s, byte b, out ParseState? result)
    {
        result = null;
        while (true)
        {
            if (s is null) return Outcome.EndedBefore;
            var step = s.Top.Feed(b);
            switch (step.Kind)
            {
                case StepKind.Reject:
                    return Outcome.Rejected;
                case StepKind.Stay:
                    s = new ParseState(step.Self!, s.Next);
                    if (step.Refeed) continue;
                    result = s;
                    return Outcome.Consumed;
                case StepKind.Push:
                    s = new ParseState(step.Child!, new ParseState(step.Self!, s.Next));
                    if (step.Refeed) continue;
                    result = s;
                    return Outcome.Consumed;
                default:
                    var done = s.Top;
                    s = s.Next is null ? null : new ParseState(s.Next.Top.ChildDone(done), s.Next.Next);
                    if (step.Refeed) continue;
                    result = s;
                    return Outcome.Consumed;
            }
        }
    }

    /// <summary>The value may end here (empty, or only frames that may end).</summary>
    public static bool CanEnd(ParseState? s)
    {
        for (; s is not null; s = s.Next) if (!s.Top.CanEnd) return false;
        return true;
    }

    public static int MinRemaining(ParseState? s)
    {
        int n = 0;
        for (; s is not null; s = s.Next) n += s.Top.MinRemaining;
        return n;
    }

    public static ParseState Of(Frame f) => new(f, null);
}

// ---- scalars -------------------------------------------------------------------------------------------------------

/// <summary>One of a set of fixed byte strings (enum, const, true/false/null, a fixed marker, "" for an optional part).</summary>
public sealed class LiteralNode : GrammarNode
{
    public LiteralNode(IEnumerable<byte[]> options) => Options = options.Distinct(ByteArrayComparer.Instance).ToArray();
    public LiteralNode(params string[] texts) : this(texts.Select(t => Encoding.UTF8.GetBytes(t))) { }
    public byte[][] Options { get; }
    public override int MinLength => Options.Min(o => o.Length);
    public override Frame Start(int depth) => new LiteralFrame(Options, 0);

    sealed class LiteralFrame(byte[][] options, int pos) : Frame
    {
        public override bool CanEnd => options.Any(o => o.Length == pos);
        public override int MinRemaining => options.Min(o => o.Length - pos);
        // The options' unread tails decide everything (the arrays themselves are new after every byte).
        public override void AddKey(List<object?> key) =>
            key.Add(string.Join('\u0100', options.Select(o => System.Text.Encoding.Latin1.GetString(o, pos, o.Length - pos)).Order(StringComparer.Ordinal)));
        public override Step Feed(byte b)
        {
            var left = options.Where(o => o.Length > pos && o[pos] == b).ToArray();
            if (left.Length == 0) return CanEnd ? Step.DoneRefeed : Step.Reject;
            if (left.Length == 1 && left[0].Length == pos + 1) return Step.Done;
            return Step.To(new LiteralFrame(left, pos + 1));
        }
    }
}

sealed class ByteArrayComparer : IEqualityComparer<byte[]>
{
    public static readonly ByteArrayComparer Instance = new();
    public bool Equals(byte[]? x, byte[]? y) => x.AsSpan().SequenceEqual(y);
    public int GetHashCode(byte[] o) { var h = new HashCode(); h.AddBytes(o); return h.ToHashCode(); }
}

/// <summary>
/// A JSON number (RFC 8259 grammar), or an integer. Digits are capped (15 before the point, 15 after, 2 in the
/// exponent) so every output is a finite double that any parser reads back exactly as written.
/// </summary>
public sealed class NumberNode(bool integer) : GrammarNode
{
    public const int MaxIntDigits = 15, MaxFracDigits = 15, MaxExpDigits = 2;
    public bool Integer { get; } = integer;
    public override int MinLength => 1;
    public override Frame Start(int depth) => new NumberFrame(Integer, Phase.Start, 0);

    enum Phase { Start, Minus, Zero, Int, Dot, Frac, E, ESign, Exp }

    sealed class NumberFrame(bool integer, Phase phase, int digits) : Frame
    {
        public override bool CanEnd => phase is Phase.Zero or Phase.Int or Phase.Frac or Phase.Exp;
        public override int MinRemaining => CanEnd ? 0 : 1;
        public override void AddKey(List<object?> key) { key.Add(integer); key.Add(phase); key.Add(digits); }
        public override Step Feed(byte b)
        {
            bool digit = b is >= (byte)'0' and <= (byte)'9';
            switch (phase)
            {
                case Phase.Start:
                case Phase.Minus:
                    if (b == '-' && phase == Phase.Start) return Step.To(new NumberFrame(integer, Phase.Minus, 0));
                    if (b == '0') return Step.To(new NumberFrame(integer, Phase.Zero, 1));
                    return digit ? Step.To(new NumberFrame(integer, Phase.Int, 1)) : Step.Reject;
                case Phase.Zero:
                case Phase.Int:
                    if (digit && phase == Phase.Int && digits < MaxIntDigits) return Step.To(new NumberFrame(integer, Phase.Int, digits + 1));
                    if (!integer && b == '.') return Step.To(new NumberFrame(integer, Phase.Dot, 0));
                    if (!integer && b is (byte)'e' or (byte)'E') return Step.To(new NumberFrame(integer, Phase.E, 0));
                    return digit ? Step.Reject : Step.DoneRefeed;
                case Phase.Dot:
                    return digit ? Step.To(new NumberFrame(integer, Phase.Frac, 1)) : Step.Reject;
                case Phase.Frac:
                    if (digit) return digits < MaxFracDigits ? Step.To(new NumberFrame(integer, Phase.Frac, digits + 1)) : Step.Reject;
                    if (b is (byte)'e' or (byte)'E') return Step.To(new NumberFrame(integer, Phase.E, 0));
                    return Step.DoneRefeed;
                case Phase.E:
                    if (b is (byte)'+' or (byte)'-') return Step.To(new NumberFrame(integer, Phase.ESign, 0));
                    return digit ? Step.To(new NumberFrame(integer, Phase.Exp, 1)) : Step.Reject;
                case Phase.ESign:
                    return digit ? Step.To(new NumberFrame(integer, Phase.Exp, 1)) : Step.Reject;
                default:
                    if (digit) return digits < MaxExpDigits ? Step.To(new NumberFrame(integer, Phase.Exp, digits + 1)) : Step.Reject;
                    return Step.DoneRefeed;
            }
        }
    }
}

/// <summary>
/// A JSON string: valid UTF-8 (no overlong forms, no surrogates), escapes, no control characters, no \u escape of a
/// surrogate (a lone one is no text), so the text always decodes; length in code points within [min, max].
/// </summary>
public sealed class StringNode(int minLength = 0, int maxLength = int.MaxValue) : GrammarNode
{
    public int MinChars { get; } = minLength;
    public int MaxChars { get; } = maxLength;
    public override int MinLength => 2 + MinChars;
    public override Frame Start(int depth) => new StringFrame(this, null, Phase.Open, 0, 0, 0, 0, null);

    /// <summary>A string whose decoded value is recorded and must not be one of <paramref name="forbidden"/> (object keys).</summary>
    internal Frame StartKey(IReadOnlySet<string> forbidden) => new StringFrame(this, forbidden, Phase.Open, 0, 0, 0, 0, "");

    internal enum Phase { Open, Body, Escape, Hex, Utf8 }

    /// <param name="pending">UTF-8 continuation bytes or hex digits still to come.</param>
    /// <param name="range">Utf8: the next byte's allowed range (lo &lt;&lt; 8 | hi); Hex: the code point so far.</param>
    /// <param name="text">The decoded value as UTF-8 bytes in chars (only for keys; null otherwise).</param>
    internal sealed class StringFrame(StringNode node, IReadOnlySet<string>? forbidden, Phase phase, int chars, int pending, int range, int unused, string? text) : Frame
    {
        public string? Text => text;
        bool Taken => forbidden is not null && forbidden.Contains(text!);

        public override void AddKey(List<object?> key)
        {
            key.Add(node); key.Add(SetKey(forbidden)); key.Add(phase); key.Add(pending); key.Add(range); key.Add(unused);
            // Past minLength only maxLength tells lengths apart; a key's text matters only against the taken keys.
            key.Add(node.MaxChars == int.MaxValue ? Math.Min(chars, node.MinChars) : chars);
            key.Add(forbidden is null ? null : text);
        }
        public override int MinRemaining => phase switch
        {
            Phase.Open => node.MinLength,
            Phase.Body => Math.Max(node.MinChars - chars, Taken ? 1 : 0) + 1,
            Phase.Escape => 1 + Math.Max(0, node.MinChars - chars) + 1,
            _ => pending + Math.Max(0, node.MinChars - chars) + 1,
        };

        StringFrame With(Phase p, int c, int pend = 0, int r = 0x80BF, string? add = null) =>
            new(node, forbidden, p, c, pend, r, unused, text is null || add is null ? text : text + add);

        static string Bytes(int codePoint) => System.Text.Encoding.Latin1.GetString(System.Text.Encoding.UTF8.GetBytes(char.ConvertFromUtf32(codePoint)));

        public override Step Feed(byte b)
        {
            string? one = text is null ? null : ((char)b).ToString();   // only keys record their text
            switch (phase)
            {
                case Phase.Open:
                    return b == '"' ? Step.To(With(Phase.Body, 0)) : Step.Reject;
                case Phase.Body:
                    if (b == '"') return chars >= node.MinChars && !Taken ? Step.Done : Step.Reject;
                    if (chars >= node.MaxChars || b < 0x20) return Step.Reject;
                    if (b == '\\') return Step.To(With(Phase.Escape, chars));
                    if (b < 0x80) return Step.To(With(Phase.Body, chars + 1, add: one));
                    // UTF-8 lead bytes and the range of the next byte (RFC 3629, Unicode table 3-7).
                    return b switch
                    {
                        >= 0xC2 and <= 0xDF => Step.To(With(Phase.Utf8, chars + 1, 1, add: one)),
                        0xE0 => Step.To(With(Phase.Utf8, chars + 1, 2, 0xA0BF, one)),
                        0xED => Step.To(With(Phase.Utf8, chars + 1, 2, 0x809F, one)),
                        >= 0xE1 and <= 0xEF => Step.To(With(Phase.Utf8, chars + 1, 2, add: one)),
                        0xF0 => Step.To(With(Phase.Utf8, chars + 1, 3, 0x90BF, one)),
                        >= 0xF1 and <= 0xF3 => Step.To(With(Phase.Utf8, chars + 1, 3, add: one)),
                        0xF4 => Step.To(With(Phase.Utf8, chars + 1, 3, 0x808F, one)),
                        _ => Step.Reject,
                    };
                case Phase.Utf8:
                    if (b < range >> 8 || b > (range & 0xFF)) return Step.Reject;
                    return Step.To(pending == 1 ? With(Phase.Body, chars, add: one) : With(Phase.Utf8, chars, pending - 1, add: one));
                case Phase.Escape:
                    if (b == 'u') return Step.To(With(Phase.Hex, chars + 1, 4, 0));
                    int i = "\"\\/bfnrt".IndexOf((char)b);
                    return i < 0 ? Step.Reject : Step.To(With(Phase.Body, chars + 1, add: "\"\\/\b\f\n\r\t"[i].ToString()));
                default: // Hex
                    int d = b switch { >= (byte)'0' and <= (byte)'9' => b - '0', >= (byte)'a' and <= (byte)'f' => b - 'a' + 10, >= (byte)'A' and <= (byte)'F' => b - 'A' + 10, _ => -1 };
                    if (d < 0) return Step.Reject;
                    int code = range * 16 + d;
                    if (pending == 3 && code is >= 0xD8 and <= 0xDF) return Step.Reject;   // D800–DFFF only: \uE000–\uFFFF are text
                    return Step.To(pending == 1 ? With(Phase.Body, chars, add: Bytes(code)) : With(Phase.Hex, chars, pending - 1, code));
            }
        }
    }
}

// ---- containers ----------------------------------------------------------------------------------------------------

/// <summary>A property of an object schema: its key as JSON text (with quotes) and its value's node.</summary>
public sealed record Property(string Name, byte[] Key, GrammarNode Value, bool Required);

/// <summary>
/// An object with declared properties, written in declaration order (as OpenAI's structured outputs): optional
/// properties may be skipped, required ones may not, nothing else appears. Keys are matched inline.
/// </summary>
public sealed class ObjectNode : GrammarNode
{
    readonly int[] _closeCost;   // _closeCost[i]: bytes to close after property i-1 was the last written (i = 0: none yet, after "{")

    public ObjectNode(IReadOnlyList<Property> properties)
    {
        Properties = properties;
        int n = properties.Count;
        _closeCost = new int[n + 1];
        int after = 1;   // "}"
        var costAfter = new int[n + 1];
        costAfter[n] = 1;
        for (int i = n - 1; i >= 0; i--)
        {
            if (properties[i].Required) after += 1 + Cost(properties[i]);
            costAfter[i] = after;
        }
        // costAfter[i]: after "...,", with properties[i..] to come: each required one costs "," + key + ":" + value.
        for (int i = 0; i <= n; i++) _closeCost[i] = costAfter[i];
        int firstRequired = properties.ToList().FindIndex(p => p.Required);
        MinLength = 1 + (firstRequired < 0 ? 1 : _closeCost[0] - 1);   // "{" then the first needs no comma
    }

    public IReadOnlyList<Property> Properties { get; }
    public override int MinLength { get; }
    static int Cost(Property p) => p.Key.Length + 1 + p.Value.MinLength;

    /// <summary>Bytes to close when property <paramref name="last"/> was the last written (-1: none).</summary>
    int AfterValue(int last) => _closeCost[last + 1];

    /// <summary>Candidates for the next key after property <paramref name="last"/>: up to and including the next required one.</summary>
    int[] Candidates(int last)
    {
        var list = new List<int>();
        for (int i = last + 1; i < Properties.Count; i++)
        {
            list.Add(i);
            if (Properties[i].Required) break;
        }
        return list.ToArray();
    }

    public override Frame Start(int depth) => new ObjectFrame(this, depth, Phase.Open, -1, [], 0);

    enum Phase { Open, AfterOpen, Key, Colon, Value, AfterValue }

    sealed class ObjectFrame(ObjectNode node, int depth, Phase phase, int last, int[] candidates, int pos) : Frame
    {
        public override void AddKey(List<object?> key)
        {
            key.Add(node); key.Add(depth); key.Add(phase); key.Add(last); key.Add(pos); key.Add(candidates.Length);
            foreach (var c in candidates) key.Add(c);
        }

        public override int MinRemaining => phase switch
        {
            Phase.Open => node.MinLength,
            Phase.AfterOpen => node.MinLength - 1,
            Phase.Key => candidates.Min(c => node.Properties[c].Key.Length - pos + 1 + node.Properties[c].Value.MinLength + node.AfterValue(c)),
            Phase.Colon => 1 + node.Properties[last].Value.MinLength + node.AfterValue(last),
            Phase.Value => node.Properties[last].Value.MinLength + node.AfterValue(last),
            _ => node.AfterValue(last),
        };

        public override Step Feed(byte b)
        {
            switch (phase)
            {
                case Phase.Open:
                    return b == '{' ? Step.To(new ObjectFrame(node, depth, Phase.AfterOpen, -1, node.Candidates(-1), 0)) : Step.Reject;
                case Phase.AfterOpen:
                    if (b == '}') return node.AfterValue(-1) == 1 ? Step.Done : Step.Reject;
                    return candidates.Length == 0 ? Step.Reject : Step.To(new ObjectFrame(node, depth, Phase.Key, last, candidates, 0), refeed: true);
                case Phase.Key:
                    var left = candidates.Where(c => node.Properties[c].Key[pos] == b).ToArray();
                    if (left.Length == 0) return Step.Reject;
                    // Keys end with '"', so no key is a prefix of another: one left at its end is the key.
                    if (left.Length == 1 && node.Properties[left[0]].Key.Length == pos + 1)
                        return Step.To(new ObjectFrame(node, depth, Phase.Colon, left[0], [], 0));
                    return Step.To(new ObjectFrame(node, depth, Phase.Key, last, left, pos + 1));
                case Phase.Colon:
                    return b == ':' ? Step.To(new ObjectFrame(node, depth, Phase.Value, last, [], 0)) : Step.Reject;
                case Phase.Value:
                    return Step.PushTo(new ObjectFrame(node, depth, Phase.AfterValue, last, [], 0), node.Properties[last].Value.Start(depth + 1), refeed: true);
                default:
                    if (b == '}') return node.AfterValue(last) == 1 ? Step.Done : Step.Reject;
                    if (b != ',') return Step.Reject;
                    var next = node.Candidates(last);
                    return next.Length == 0 ? Step.Reject : Step.To(new ObjectFrame(node, depth, Phase.Key, last, next, 0));
            }
        }
    }
}

/// <summary>Any JSON object (json_object mode, an object schema without properties): free keys, no duplicates, any values.</summary>
public sealed class FreeObjectNode : GrammarNode
{
    public static readonly FreeObjectNode Instance = new();
    static readonly StringNode KeyNode = new();
    public override int MinLength => 2;
    public override Frame Start(int depth) => new FreeObjectFrame(depth, Phase.Open, System.Collections.Immutable.ImmutableHashSet<string>.Empty);

    enum Phase { Open, AfterOpen, Colon, Value, AfterValue, AfterComma }

    sealed class FreeObjectFrame(int depth, Phase phase, System.Collections.Immutable.ImmutableHashSet<string> keys) : Frame
    {
        public override void AddKey(List<object?> key) { key.Add(depth); key.Add(phase); key.Add(SetKey(keys)); }

        public override int MinRemaining => phase switch
        {
            Phase.Open => 2,
            Phase.AfterOpen => 1,
            Phase.Colon => 3,        // ":0}"
            Phase.Value => 2,        // "0}"
            Phase.AfterValue => 1,
            _ => keys.Contains("") ? 6 : 5,   // "\"\":0}", or "\"a\":0}" when "" is taken
        };

        public override Frame ChildDone(Frame child) =>
            phase == Phase.Colon && child is StringNode.StringFrame { Text: { } t } ? new FreeObjectFrame(depth, phase, keys.Add(t)) : this;

        public override Step Feed(byte b) => phase switch
        {
            Phase.Open => b == '{' ? Step.To(new FreeObjectFrame(depth, Phase.AfterOpen, keys)) : Step.Reject,
            Phase.AfterOpen when b == '}' => Step.Done,
            Phase.AfterOpen or Phase.AfterComma => b == '"' ? Step.PushTo(new FreeObjectFrame(depth, Phase.Colon, keys), KeyNode.StartKey(keys), refeed: true) : Step.Reject,
            Phase.Colon => b == ':' ? Step.To(new FreeObjectFrame(depth, Phase.Value, keys)) : Step.Reject,
            Phase.Value => Step.PushTo(new FreeObjectFrame(depth, Phase.AfterValue, keys), AnyNode.Instance.Start(depth + 1), refeed: true),
            _ => b == '}' ? Step.Done : b == ',' ? Step.To(new FreeObjectFrame(depth, Phase.AfterComma, keys)) : Step.Reject,
        };
    }
}

/// <summary>An array of <see cref="Items"/> with [min, max] entries.</summary>
public sealed class ArrayNode(GrammarNode items, int minItems = 0, int maxItems = int.MaxValue) : GrammarNode
{
    public GrammarNode Items { get; } = items;
    public int MinItems { get; } = minItems;
    public int MaxItems { get; } = maxItems;
    public override int MinLength => 2 + (MinItems == 0 ? 0 : MinItems * Items.MinLength + MinItems - 1);
    public override Frame Start(int depth) => new ArrayFrame(this, depth, Phase.Open, 0);

    enum Phase { Open, AfterOpen, AfterValue, AfterComma }

    sealed class ArrayFrame(ArrayNode node, int depth, Phase phase, int count) : Frame
    {
        public override void AddKey(List<object?> key)
        {
            key.Add(node); key.Add(depth); key.Add(phase);
            key.Add(node.MaxItems == int.MaxValue ? Math.Min(count, node.MinItems) : count);   // past minItems without maxItems: all alike
        }

        int More(int done) => Math.Max(0, node.MinItems - done) * (1 + node.Items.MinLength);
        public override int MinRemaining => phase switch
        {
            Phase.Open => node.MinLength,
            Phase.AfterOpen => node.MinLength - 1,
            Phase.AfterValue => More(count) + 1,
            _ => node.Items.MinLength + More(count + 1) + 1,
        };

        public override Step Feed(byte b)
        {
            switch (phase)
            {
                case Phase.Open:
                    return b == '[' ? Step.To(new ArrayFrame(node, depth, Phase.AfterOpen, 0)) : Step.Reject;
                case Phase.AfterOpen:
                    if (b == ']') return node.MinItems == 0 ? Step.Done : Step.Reject;
                    return node.MaxItems == 0 ? Step.Reject : Step.PushTo(new ArrayFrame(node, depth, Phase.AfterValue, 1), node.Items.Start(depth + 1), refeed: true);
                case Phase.AfterValue:
                    if (b == ']') return count >= node.MinItems ? Step.Done : Step.Reject;
                    return b == ',' && count < node.MaxItems ? Step.To(new ArrayFrame(node, depth, Phase.AfterComma, count)) : Step.Reject;
                default:
                    return Step.PushTo(new ArrayFrame(node, depth, Phase.AfterValue, count + 1), node.Items.Start(depth + 1), refeed: true);
            }
        }
    }
}

/// <summary>Any JSON value (free JSON): the first byte picks the kind; below <see cref="GrammarNode.MaxFreeDepth"/> only scalars.</summary>
public sealed class AnyNode : GrammarNode
{
    public static readonly AnyNode Instance = new();
    static readonly GrammarNode Str = new StringNode(), Num = new NumberNode(false), Lit = new LiteralNode("true", "false", "null");
    static readonly GrammarNode Arr = new ArrayNode(Instance);
    public override int MinLength => 1;
    public override Frame Start(int depth) => new AnyFrame(depth);

    sealed class AnyFrame(int depth) : Frame
    {
        public override void AddKey(List<object?> key) => key.Add(depth);
        public override int MinRemaining => 1;
        public override Step Feed(byte b) => b switch
        {
            (byte)'{' when depth < MaxFreeDepth => Step.To(FreeObjectNode.Instance.Start(depth), refeed: true),
            (byte)'[' when depth < MaxFreeDepth => Step.To(Arr.Start(depth), refeed: true),
            (byte)'"' => Step.To(Str.Start(depth), refeed: true),
            (byte)'-' or (>= (byte)'0' and <= (byte)'9') => Step.To(Num.Start(depth), refeed: true),
            (byte)'t' or (byte)'f' or (byte)'n' => Step.To(Lit.Start(depth), refeed: true),
            _ => Step.Reject,
        };
    }
}

/// <summary>
/// One of several alternatives (a type list, anyOf, tool calls, free text or a tool call), run side by side until
/// the bytes leave one: each alternative is a whole sub-stack, so no alternative needs to know the others.
/// </summary>
public sealed class UnionNode(IReadOnlyList<GrammarNode> alternatives) : GrammarNode
{
    public IReadOnlyList<GrammarNode> Alternatives { get; } = alternatives;
    public override int MinLength => Alternatives.Min(a => a.MinLength);
    public override Frame Start(int depth) => new UnionFrame(Alternatives.Select(a => (ParseState?)ParseState.Of(a.Start(depth))).ToArray());

    sealed class UnionFrame(ParseState?[] alts) : Frame
    {
        public override void AddKey(List<object?> key)
        {
            key.Add(alts.Length);
            foreach (var a in alts) key.Add(StateKey.Of(a));
        }

        public override bool CanEnd => alts.Any(ParseState.CanEnd);
        public override int MinRemaining => alts.Min(ParseState.MinRemaining);
        public override bool AcceptsAll => alts.Length == 1 && alts[0] is { Next: null } s && s.Top.AcceptsAll;

        public override Step Feed(byte b)
        {
            var left = new List<ParseState?>();
            bool endedBefore = false;
            foreach (var a in alts)
            {
                switch (ParseState.Feed(a, b, out var next))
                {
                    case ParseState.Outcome.Consumed: left.Add(next); break;
                    case ParseState.Outcome.EndedBefore: endedBefore = true; break;
                }
            }
            if (left.Count == 0) return endedBefore ? Step.DoneRefeed : Step.Reject;
            if (left.Count == 1 && left[0] is null) return Step.Done;   // the one alternative left finished with this byte
            return Step.To(new UnionFrame(left.ToArray()));
        }
    }
}

/// <summary>Several nodes one after another (a marker, a value, a closing marker).</summary>
public sealed class SequenceNode(IReadOnlyList<GrammarNode> parts) : GrammarNode
{
    public IReadOnlyList<GrammarNode> Parts { get; } = parts;
    public override int MinLength => Parts.Sum(p => p.MinLength);
    public override Frame Start(int depth) => new SequenceFrame(this, depth, 0);

    sealed class SequenceFrame(SequenceNode node, int depth, int next) : Frame
    {
        public override void AddKey(List<object?> key) { key.Add(node); key.Add(depth); key.Add(next); }
        public override bool CanEnd => next == node.Parts.Count;
        public override int MinRemaining => node.Parts.Skip(next).Sum(p => p.MinLength);
        public override Step Feed(byte b) => next == node.Parts.Count
            ? Step.DoneRefeed
            : Step.PushTo(new SequenceFrame(node, depth, next + 1), node.Parts[next].Start(depth), refeed: true);
    }
}

/// <summary>
/// Free text that must not begin (after leading whitespace) with <paramref name="forbiddenStart"/>: tool_choice
/// "auto" (a reply that starts with the tool-call marker is a tool call, so plain text may not) and "none".
/// </summary>
public sealed class FreeTextNode(string forbiddenStart) : GrammarNode
{
    readonly byte[] _forbidden = Encoding.UTF8.GetBytes(forbiddenStart);
    public override int MinLength => 0;
    public override Frame Start(int depth) => new TextFrame(_forbidden, 0);

    sealed class TextFrame(byte[] forbidden, int matched) : Frame   // matched < 0: the start is no longer the marker
    {
        public override void AddKey(List<object?> key) { key.Add(forbidden); key.Add(matched); }
        public override bool CanEnd => true;
        public override int MinRemaining => 0;
        public override bool AcceptsAll => matched < 0;
        public override Step Feed(byte b)
        {
            if (matched < 0) return Step.To(this);
            if (matched == 0 && b is (byte)' ' or (byte)'\n' or (byte)'\t' or (byte)'\r') return Step.To(this);
            if (b != forbidden[matched]) return Step.To(new TextFrame(forbidden, -1));
            return matched + 1 == forbidden.Length ? Step.Reject : Step.To(new TextFrame(forbidden, matched + 1));
        }
    }
}
