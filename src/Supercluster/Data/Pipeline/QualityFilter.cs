using System.Globalization;
using System.IO.Hashing;
using System.Runtime.CompilerServices;
using System.Numerics;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Supercluster.Data.Pipeline;

/// <summary>
/// Heuristic document quality rules in the style of Gopher (Rae et al. 2021, appendix A), C4 (Raffel et al. 2020) and
/// FineWeb (Penedo et al. 2024). A document is removed by the first rule it fails, in <see cref="Rules"/> order, and
/// counted under that rule. Words are white-space separated; lines are split on '\n'. Thresholds are options
/// (<c>--filter-threshold NAME=VALUE</c>); a rule is disabled by a value that can never fail (e.g. 0 for a minimum).
/// All rules are measured together: one pass over the characters finds the words and lines and counts everything
/// per word and per line; the n-gram rules number the distinct words, then the distinct n-grams level by level
/// (an n-gram is a pair of shorter ones), so no n-gram string is built. Same values as one pass per rule (tested).
/// </summary>
public sealed class QualityFilter
{
    /// <summary>Name, default threshold, and what it bounds. One source for the rules, their docs and the CLI help.</summary>
    public static readonly (string Name, double Default, string Meaning)[] Rules =
    [
        ("min_words", 50, "fewer words than this (Gopher)"),
        ("max_words", 100_000, "more words than this (Gopher)"),
        ("min_mean_word_length", 3, "mean word length in characters below this (Gopher)"),
        ("max_mean_word_length", 10, "mean word length above this (Gopher)"),
        ("max_symbol_word_ratio", 0.1, "('#' + '...'/'…') per word above this (Gopher)"),
        ("max_bullet_lines", 0.9, "share of lines starting with a bullet above this (Gopher)"),
        ("max_ellipsis_lines", 0.3, "share of lines ending in '...'/'…' above this (Gopher)"),
        ("min_punct_lines", 0.12, "share of lines ending in terminal punctuation below this (FineWeb)"),
        ("min_alpha_words", 0.8, "share of words with a letter below this (Gopher)"),
        ("min_stop_words", 2, "fewer of the, be, to, of, and, that, have, with (Gopher; English)"),
        ("max_dup_lines", 0.3, "share of lines that repeat an earlier line above this (Gopher)"),
        ("max_dup_line_chars", 0.2, "share of characters in repeated lines above this (Gopher)"),
        ("max_top_2gram", 0.20, "characters of the most frequent word 2-gram / all word characters above this (Gopher)"),
        ("max_top_3gram", 0.18, "same for 3-grams (Gopher)"),
        ("max_top_4gram", 0.16, "same for 4-grams (Gopher)"),
        ("max_dup_5gram", 0.15, "characters of words inside repeated 5-grams / all word characters above this (Gopher)"),
        ("max_dup_6gram", 0.14, "same for 6-grams (Gopher)"),
        ("max_dup_7gram", 0.13, "same for 7-grams (Gopher)"),
        ("max_dup_8gram", 0.12, "same for 8-grams (Gopher)"),
        ("max_dup_9gram", 0.11, "same for 9-grams (Gopher)"),
        ("max_dup_10gram", 0.10, "same for 10-grams (Gopher)"),
        ("lorem_ipsum", 1, "1: remove text containing 'lorem ipsum' (C4); 0: off"),
        ("curly_brace", 1, "1: remove text containing '{' — code and templates (C4); 0: off"),
    ];

    static readonly char[] Bullets = ['•', '‣', '⁃', '◦', '-', '*', '–', '—'];
    static readonly char[] TerminalPunct = ['.', '!', '?', '"', '\'', '”', '’', ')', '…', '。', '！', '？'];

    /// <summary>Gopher's stop words, after lower-casing and trimming <c>.,!?;:"'</c>.</summary>
    static bool IsStopWord(ReadOnlySpan<char> w) => w is "the" or "be" or "to" or "of" or "and" or "that" or "have" or "with";

    readonly double[] _t;

    /// <summary>Defaults, overridden by <c>NAME=VALUE</c> pairs.</summary>
    public QualityFilter(IEnumerable<string>? overrides = null)
    {
        _t = Rules.Select(r => r.Default).ToArray();
        foreach (var o in overrides ?? [])
        {
            var eq = o.IndexOf('=');
            int i = eq < 0 ? -1 : Array.FindIndex(Rules, r => r.Name == o[..eq].Trim());
            if (i < 0) throw new BadInputException($"--filter-threshold '{o}': expected NAME=VALUE with NAME one of {string.Join(", ", Rules.Select(r => r.Name))}");
            if (!double.TryParse(o[(eq + 1)..], NumberStyles.Float, CultureInfo.InvariantCulture, out var v) || !double.IsFinite(v) || v < 0)
                throw new BadInputException($"--filter-threshold '{o}': value must be a non-negative number");
            _t[i] = v;
        }
    }

    public double this[string name] => _t[Array.FindIndex(Rules, r => r.Name == name)];

    /// <summary>The first rule <paramref name="text"/> fails, or null when it passes all.</summary>
    public string? Check(string text)
    {
        var scan = Scan.Run(text);
        var m = scan.Measures;
        scan.Basic(m);
        for (int k = 0; k < FirstNgramRule; k++) if (Fails(k, m[k])) return Rules[k].Name;
        scan.Ngrams(m, _t);
        for (int k = FirstNgramRule; k < Rules.Length; k++) if (Fails(k, m[k])) return Rules[k].Name;
        return null;
    }

    /// <summary>
    /// Each rule's measured value, in <see cref="Rules"/> order: a <c>min_</c> rule fails below its threshold, a
    /// <c>max_</c> rule above it, a switch (1 = the text has it) when its threshold is non-zero; NaN never fails (a share
    /// of no lines or no words).
    /// </summary>
    public static double[] Measure(string text)
    {
        var m = new double[Rules.Length];
        var scan = Scan.Run(text);
        scan.Basic(m);
        scan.Ngrams(m, null);
        return m;
    }

    const int FirstNgramRule = 12;

    /// <summary>Per rule: -1 a minimum (<c>min_</c>), +1 a maximum (<c>max_</c>), 0 a switch.</summary>
    static readonly int[] Kind = [.. Rules.Select(r => r.Name.StartsWith("min_", StringComparison.Ordinal) ? -1 : r.Name.StartsWith("max_", StringComparison.Ordinal) ? 1 : 0)];

    bool Fails(int k, double value) => Kind[k] switch
    {
        < 0 => value < _t[k],
        > 0 => value > _t[k],
        _ => _t[k] > 0 && value > 0,
    };

    /// <summary>One pass over the text: words (spans), lines (trimmed spans) and every per-word and per-line count.</summary>
    sealed class Scan
    {
        [ThreadStatic] static Scan? t_scan;

        string _text = "";
        int[] _wordStart = new int[256], _wordLength = new int[256];
        int _words, _hashes, _ellipses, _alphaWords, _stopWords;
        long _wordChars;
        int _lines, _bulletLines, _ellipsisLines, _punctLines, _dupLines;
        long _lineChars, _dupLineChars;
        (int Start, int Length) _firstLine;
        bool _lorem, _brace;
        Dictionary<(int Start, int Length), int> _spans;
        readonly PairIds _pairs = new();
        readonly SpanComparer _comparer = new();

        Scan() => _spans = new(_comparer);

        public static Scan Run(string text)
        {
            var s = t_scan ??= new Scan();
            s.Reset(text);
            s.Pass();
            return s;
        }

        void Reset(string text)
        {
            _text = _comparer.Text = text;
            _words = _hashes = _ellipses = _alphaWords = _stopWords = 0;
            _lines = _bulletLines = _ellipsisLines = _punctLines = _dupLines = 0;
            _wordChars = _lineChars = _dupLineChars = 0;
            // Dictionary.Clear clears every bucket it ever grew: after one document of 10⁵ lines, each later document
            // with two lines would pay for 10⁵. A table that grew past a few thousand lines is dropped instead.
            if (_spans.Count > 4096) _spans = new(_comparer);
            else _spans.Clear();
        }

        // Character classes of the pass: one table lookup per ASCII character instead of a chain of tests.
        const byte Space = 1, Dot = 2, Hash = 4, Ellipsis = 8, Letter = 16, Trim = 32;
        static readonly byte[] AsciiClass = MakeAsciiClass();
        static byte[] MakeAsciiClass()
        {
            var t = new byte[128];
            for (int c = 0; c < 128; c++)
                t[c] = (byte)((char.IsWhiteSpace((char)c) ? Space : 0) | (c == '.' ? Dot : 0) | (c == '#' ? Hash : 0)
                    | (char.IsLetter((char)c) ? Letter : 0) | (".,!?;:\"'".Contains((char)c) ? Trim : 0));
            return t;
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        static int ClassOf(char c) => c < 128 ? AsciiClass[c]
            : (char.IsWhiteSpace(c) ? Space : 0) | (c == '…' ? Ellipsis : 0) | (char.IsLetter(c) ? Letter : 0);

        // Pass state between blocks: the word being read (start -1 between words) and the line being read (first -1 before
        // its first word).
        int _wordAt, _lineFirst, _lineLast, _lineDots, _dotRun;
        bool _letter;

        /// <summary>
        /// Blocks of 32 characters as bit masks (white space, '\n', letters, the characters '.', '#' and '…' that the
        /// symbol rules count); words and lines are found from the masks, a whole word run of a block at a time, and only
        /// word runs holding one of those characters are walked character by character. An ASCII block's masks are
        /// vector compares; a block with other characters (or the text's end) gets them from <see cref="ClassOf"/>, so
        /// both give what one walk over the characters with <see cref="ClassOf"/> gives.
        /// </summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        void Pass()
        {
            var t = _text;
            _wordAt = _lineFirst = _lineLast = -1;
            _lineDots = _dotRun = 0;
            _letter = false;
            ref ushort chars = ref Unsafe.As<char, ushort>(ref MemoryMarshal.GetReference(t.AsSpan()));
            for (int p = 0; p < t.Length; p += 32)
            {
                uint space, newline, letter, symbol;
                if (p + 32 > t.Length || !AsciiMasks(ref Unsafe.Add(ref chars, p), out space, out newline, out letter, out symbol))
                    ScalarMasks(t, p, out space, out newline, out letter, out symbol);
                Block(p, space, newline, letter, symbol);
            }
            if (_wordAt >= 0) EndWord(t.Length);
            if (_lineFirst >= 0) Line(_lineFirst, _lineLast + 1 - _lineFirst, _lineDots);
            // Not SearchValues<string>: 0.3 µs per document faster warm, but 25-45 ms of JIT in every process (not precompiled).
            _lorem = t.Contains("lorem ipsum", StringComparison.OrdinalIgnoreCase);
            _brace = t.Contains('{');
        }

        /// <summary>Masks of 32 ASCII characters (bit j = character j); false when one is not ASCII.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        static bool AsciiMasks(ref ushort at, out uint space, out uint newline, out uint letter, out uint symbol)
        {
            if (Vector512.IsHardwareAccelerated)
            {
                var v = Vector512.LoadUnsafe(ref at);
                if ((v & Vector512.Create((ushort)0xFF80)) != Vector512<ushort>.Zero) { space = newline = letter = symbol = 0; return false; }
                // \t \n \v \f \r (9–13) and ' ': the ASCII white space of char.IsWhiteSpace
                space = (uint)(Vector512.Equals(v, Vector512.Create((ushort)' ')) | Vector512.LessThanOrEqual(v - Vector512.Create((ushort)9), Vector512.Create((ushort)4))).ExtractMostSignificantBits();
                newline = (uint)Vector512.Equals(v, Vector512.Create((ushort)'\n')).ExtractMostSignificantBits();
                letter = (uint)Vector512.LessThanOrEqual((v | Vector512.Create((ushort)0x20)) - Vector512.Create((ushort)'a'), Vector512.Create((ushort)25)).ExtractMostSignificantBits();
                symbol = (uint)(Vector512.Equals(v, Vector512.Create((ushort)'.')) | Vector512.Equals(v, Vector512.Create((ushort)'#'))).ExtractMostSignificantBits();
                return true;
            }
            var lo = Vector256.LoadUnsafe(ref at);
            var hi = Vector256.LoadUnsafe(ref Unsafe.Add(ref at, 16));
            if (((lo | hi) & Vector256.Create((ushort)0xFF80)) != Vector256<ushort>.Zero) { space = newline = letter = symbol = 0; return false; }
            space = Space256(lo) | Space256(hi) << 16;
            newline = Vector256.Equals(lo, Vector256.Create((ushort)'\n')).ExtractMostSignificantBits() | Vector256.Equals(hi, Vector256.Create((ushort)'\n')).ExtractMostSignificantBits() << 16;
            letter = Letter256(lo) | Letter256(hi) << 16;
            symbol = Symbol256(lo) | Symbol256(hi) << 16;
            return true;

            static uint Space256(Vector256<ushort> v) => (Vector256.Equals(v, Vector256.Create((ushort)' ')) | Vector256.LessThanOrEqual(v - Vector256.Create((ushort)9), Vector256.Create((ushort)4))).ExtractMostSignificantBits();
            static uint Letter256(Vector256<ushort> v) => Vector256.LessThanOrEqual((v | Vector256.Create((ushort)0x20)) - Vector256.Create((ushort)'a'), Vector256.Create((ushort)25)).ExtractMostSignificantBits();
            static uint Symbol256(Vector256<ushort> v) => (Vector256.Equals(v, Vector256.Create((ushort)'.')) | Vector256.Equals(v, Vector256.Create((ushort)'#'))).ExtractMostSignificantBits();
        }

        /// <summary>The same masks from <see cref="ClassOf"/> for any characters; past the text's end counts as white space.</summary>
        static void ScalarMasks(string t, int p, out uint space, out uint newline, out uint letter, out uint symbol)
        {
            space = newline = letter = symbol = 0;
            int n = Math.Min(32, t.Length - p);
            for (int j = 0; j < n; j++)
            {
                char c = t[p + j];
                int k = ClassOf(c);
                uint bit = 1u << j;
                if ((k & Space) != 0) { space |= bit; if (c == '\n') newline |= bit; }
                if ((k & Letter) != 0) letter |= bit;
                if ((k & (Dot | Hash | Ellipsis)) != 0) symbol |= bit;
            }
            if (n < 32) space |= ~0u << n;
        }

        /// <summary>Bits a … b−1 (0 ≤ a ≤ b ≤ 32).</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        static uint Bits(int a, int b) => (uint)(((1UL << b) - 1) & (~0UL << a));

        /// <summary>The words and line ends of the block at <paramref name="p"/>, continuing the word or line the last block left open.</summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        void Block(int p, uint space, uint newline, uint letter, uint symbol)
        {
            int pos = 0;
            while (pos < 32)
            {
                if (_wordAt < 0)
                {
                    // A gap: any '\n' in it ends the line (the line's words ended before it).
                    uint word = ~space & (~0u << pos);
                    int s = word == 0 ? 32 : BitOperations.TrailingZeroCount(word);
                    if ((newline & Bits(pos, s)) != 0)
                    {
                        if (_lineFirst >= 0) { Line(_lineFirst, _lineLast + 1 - _lineFirst, _lineDots); _lineFirst = -1; }
                        _lineDots = 0;
                    }
                    if (s == 32) return;
                    _wordAt = p + s;
                    _letter = false;
                    _dotRun = 0;
                    if (_lineFirst < 0) _lineFirst = p + s;
                    pos = s;
                }
                uint gap = space & (~0u << pos);
                int e = gap == 0 ? 32 : BitOperations.TrailingZeroCount(gap);
                uint run = Bits(pos, e);
                if ((symbol & run) == 0)
                {
                    _dotRun = 0;
                    _letter |= (letter & run) != 0;
                }
                else
                    for (int j = pos; j < e; j++)
                    {
                        if ((symbol >> j & 1) == 0) { _dotRun = 0; _letter |= (letter >> j & 1) != 0; continue; }
                        char c = _text[p + j];
                        if (c == '.') { _lineDots++; if (++_dotRun == 3) { _ellipses++; _dotRun = 0; } } // "..." counted without overlap
                        else { _dotRun = 0; if (c == '#') _hashes++; else _ellipses++; }
                    }
                if (e == 32) return; // the word goes on in the next block
                EndWord(p + e);
                pos = e;
            }
        }

        void EndWord(int end)
        {
            _lineLast = end - 1;
            Word(_wordAt, end - _wordAt, _letter);
            _wordAt = -1;
        }

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        void Word(int start, int length, bool letter)
        {
            if (_words == _wordStart.Length) { Array.Resize(ref _wordStart, _words * 2); Array.Resize(ref _wordLength, _words * 2); }
            _wordStart[_words] = start;
            _wordLength[_words++] = length;
            _wordChars += length;
            if (letter) _alphaWords++;
            // Stop words: 2–4 characters once .,!?;:"' are trimmed from both ends. Most words start with a letter no stop word starts with.
            char c0 = _text[start];
            if (c0 < 128 && (AsciiClass[c0] & Trim) == 0 && !MayStartStopWord(c0)) return;
            int first = start, last = start + length - 1;
            while (first <= last && _text[first] < 128 && (AsciiClass[_text[first]] & Trim) != 0) first++;
            while (last >= first && _text[last] < 128 && (AsciiClass[_text[last]] & Trim) != 0) last--;
            int n = last - first + 1;
            if (n is >= 2 and <= 4 && MayStartStopWord(_text[first]) && IsStopWord(_text.AsSpan(first, n))) _stopWords++;
        }

        /// <summary>False for most words cheaply: an ASCII first character that no stop word starts with in either case.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        static bool MayStartStopWord(char c) => c >= 128 || (c | 0x20) is 't' or 'b' or 'o' or 'a' or 'h' or 'w';

        /// <summary>Gopher's stop words after invariant lower-casing (as string.ToLowerInvariant: İ → i, K (Kelvin) → k).</summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        static bool IsStopWord(ReadOnlySpan<char> w)
        {
            // ASCII: lower case is A–Z | 0x20, no call into globalization.
            ulong key = 0;
            for (int i = 0; i < w.Length; i++)
            {
                uint c = w[i];
                if (c >= 128) return IsStopWordInvariant(w);
                if (c - 'A' <= 'Z' - 'A') c |= 0x20;
                key |= (ulong)c << (16 * i);
            }
            return w.Length switch
            {
                2 => key == Be || key == To || key == Of,
                3 => key == The || key == And,
                4 => key == That || key == Have || key == With,
                _ => false,
            };
        }

        static readonly ulong Be = Packed("be"), To = Packed("to"), Of = Packed("of"), The = Packed("the"), And = Packed("and"),
            That = Packed("that"), Have = Packed("have"), With = Packed("with");
        static ulong Packed(string s) { ulong k = 0; for (int i = 0; i < s.Length; i++) k |= (ulong)s[i] << (16 * i); return k; }

        static bool IsStopWordInvariant(ReadOnlySpan<char> w)
        {
            Span<char> lower = stackalloc char[4];
            int n = w.ToLowerInvariant(lower);
            return QualityFilter.IsStopWord(lower[..n]);
        }

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        void Line(int start, int length, int dots)
        {
            _lines++;
            _lineChars += length;
            var l = _text.AsSpan(start, length);
            if (Array.IndexOf(Bullets, l[0]) >= 0) _bulletLines++;
            // string.EndsWith(string) compares by culture (ignorable characters such as U+200B after the dots match);
            // that needs three dots in the line, so the culture comparison runs only then.
            if (l[^1] == '…' || l.EndsWith("...", StringComparison.Ordinal) || (dots >= 3 && l.EndsWith("...", StringComparison.CurrentCulture))) _ellipsisLines++;
            if (Array.IndexOf(TerminalPunct, l[^1]) >= 0) _punctLines++;
            // A single line cannot repeat: the first is hashed only when a second one comes (most posts are one line).
            if (_lines == 1) { _firstLine = (start, length); return; }
            if (_lines == 2) _spans.TryAdd(_firstLine, 0);
            if (!_spans.TryAdd((start, length), 0)) { _dupLines++; _dupLineChars += length; }
        }

        public void Basic(double[] m)
        {
            int n = _words;
            double wordChars = _wordChars;
            double meanLen = n == 0 ? 0 : wordChars / n;
            double LineShare(int count) => _lines > 0 ? count / (double)_lines : double.NaN;
            m[0] = m[1] = n;
            m[2] = m[3] = meanLen;
            m[4] = n > 0 ? (_hashes + _ellipses) / (double)n : double.NaN;
            m[5] = LineShare(_bulletLines);
            m[6] = LineShare(_ellipsisLines);
            m[7] = LineShare(_punctLines);
            m[8] = n > 0 ? _alphaWords / (double)n : double.NaN;
            m[9] = _stopWords;
            m[10] = LineShare(_dupLines);
            m[11] = _lineChars == 0 ? 0 : _dupLineChars / (double)_lineChars;
            m[21] = _lorem ? 1 : 0;
            m[22] = _brace ? 1 : 0;
        }

        /// <summary>
        /// Top 2–4-gram and repeated 5–10-gram characters over all word characters. Words get ids (equal text, equal
        /// id); an n-gram's id is that of a pair of shorter n-gram ids: 2 = (1, 1 at +1), 3 = (2, 2 at +1),
        /// 4 = (2, 2 at +2), 5 = (4, 4 at +1), n = 6…10 = (5, 5 at +n−5), which together cover exactly its n words.
        /// No repeated n-gram means no repeated longer one, so the levels stop there (their values are 0).
        /// With <paramref name="limits"/> (the thresholds; <see cref="Check"/>), the 3-grams and longer are not counted
        /// when bounds from the 2-grams show no rule of theirs can fail; their values are then left at 0 (which passes).
        /// </summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Ngrams(double[] m, double[]? limits)
        {
            int n = _words;
            double wordChars = _wordChars;
            for (int k = FirstNgramRule; k <= 20; k++) m[k] = wordChars > 0 ? 0 : double.NaN;
            if (wordChars == 0 || n < 2) return;
            var g1 = Ids(0, n);
            int distinctWords = NumberWords(g1);
            bool repeats = distinctWords < n;
            var g2 = Level(g1, 1, 1, ref repeats, out int d2);
            if (!repeats) return; // no repeated word pair: no longer n-gram repeats either
            m[12] = TopChars(g2, 2, d2, out int top2) / wordChars;
            if (limits is not null && CannotFail(g2, d2, top2, wordChars, limits)) return;
            var g3 = Level(g2, 1, 2, ref repeats, out int d3);
            m[13] = TopChars(g3, 3, d3, out _) / wordChars;
            if (!repeats) return;
            var g4 = Level(g2, 2, 3, ref repeats, out int d4);
            m[14] = TopChars(g4, 4, d4, out _) / wordChars;
            if (!repeats) return;
            var g5 = Level(g4, 1, 4, ref repeats, out int d5);
            if (!repeats) return;
            m[15] = RepeatedChars(g5, 5, d5) / wordChars;
            for (int k = 6; k <= 10; k++)
            {
                bool r = true;
                var gk = Level(g5, k - 5, 2, ref r, out int dk); // slot 2 (3-grams) is free again
                if (!r) break;
                m[15 + k - 5] = RepeatedChars(gk, k, dk) / wordChars;
            }
        }

        /// <summary>
        /// True when no 3-gram or longer rule can fail, from the 2-grams alone: a 3- or 4-gram occurs at most as often as
        /// its first 2-gram (≤ <paramref name="top2"/> times) and spans at most the longest run of 3 or 4 words; the
        /// words inside repeated n-grams (n ≥ 5) all lie inside repeated 2-grams. Each bound is compared as the rule
        /// compares its value (the same division), so a bound at or below the threshold means the value is too.
        /// </summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        bool CannotFail(ReadOnlySpan<int> g2, int d2, int top2, double wordChars, double[] limits)
        {
            long run3 = 0, run4 = 0;
            for (int i = 0; i + 2 < _words; i++)
            {
                long c3 = (long)_wordLength[i] + _wordLength[i + 1] + _wordLength[i + 2];
                run3 = Math.Max(run3, c3);
                if (i + 3 < _words) run4 = Math.Max(run4, c3 + _wordLength[i + 3]);
            }
            if ((double)(top2 * run3) / wordChars > limits[13] || (double)(top2 * run4) / wordChars > limits[14]) return false;
            double longest = limits[15];
            for (int k = 16; k <= 20; k++) longest = Math.Min(longest, limits[k]);
            return RepeatedChars(g2, 2, d2) / wordChars <= longest;
        }

        // Word numbering: open addressing, equal text confirmed (a hash match alone is not trusted). A word of up to 16
        // characters is its own key (its characters zero-padded in one 32-byte vector: hashed and compared without a
        // call); a longer one is keyed by its 64-bit xxHash3 and compared as text. The ids depend only on text equality.
        // One cache line per slot; the table in use is the smallest power of two ≥ 2 × words (fewer lines touched).
        [StructLayout(LayoutKind.Sequential, Size = 64)]
        struct Slot { public Vector256<ushort> Key; public ulong Hash; public int Stamp, Word, Id, Length; }
        Slot[] _slots = new Slot[512];
        int _slotGeneration;
        const int ShortWord = 16;
        static readonly Vector256<ushort>[] FirstChars = [.. Enumerable.Range(0, ShortWord + 1).Select(n =>
            Vector256.Create([.. Enumerable.Range(0, ShortWord).Select(j => j < n ? (ushort)0xFFFF : (ushort)0)]))];

        /// <summary>Ids of the words (equal text, equal id; in order of first appearance) into <paramref name="ids"/>; returns how many distinct.</summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        int NumberWords(Span<int> ids)
        {
            int n = _words, count = 0;
            int size = (int)BitOperations.RoundUpToPowerOf2((uint)Math.Max(64, 2 * n));
            if (size > _slots.Length) (_slots, _slotGeneration) = (new Slot[size], 0);
            if (++_slotGeneration == int.MaxValue) { Array.Clear(_slots); _slotGeneration = 1; }
            int mask = size - 1, generation = _slotGeneration;
            var slots = _slots;
            var text = _text;
            ref ushort chars = ref Unsafe.As<char, ushort>(ref MemoryMarshal.GetReference(text.AsSpan()));
            Span<ushort> tail = stackalloc ushort[ShortWord]; // a short word within 16 characters of the text's end
            var firstChars = FirstChars;
            for (int i = 0; i < n; i++)
            {
                int start = _wordStart[i], length = _wordLength[i];
                Vector256<ushort> key = default;
                ulong h;
                if (length <= ShortWord)
                {
                    if (start + ShortWord <= text.Length) key = Vector256.LoadUnsafe(ref chars, (nuint)start) & firstChars[length];
                    else
                    {
                        tail.Clear();
                        MemoryMarshal.Cast<char, ushort>(text.AsSpan(start, length)).CopyTo(tail);
                        key = Vector256.Create<ushort>(tail);
                    }
                    var q = key.AsUInt64();
                    h = (q.GetElement(0) * 0x9E3779B97F4A7C15UL) ^ (q.GetElement(1) * 0xC2B2AE3D27D4EB4FUL)
                        ^ (q.GetElement(2) * 0x165667B19E3779F9UL) ^ (q.GetElement(3) * 0xD6E8FEB86659FD93UL) ^ (ulong)length;
                    h ^= h >> 29;
                    h *= 0xBF58476D1CE4E5B9UL;
                }
                else h = XxHash3.HashToUInt64(MemoryMarshal.AsBytes(text.AsSpan(start, length)));
                int at = (int)(h >> 40) & mask;
                while (true)
                {
                    ref var slot = ref slots[at];
                    if (slot.Stamp != generation)
                    {
                        slot = new Slot { Key = key, Hash = h, Stamp = generation, Word = i, Id = count, Length = length };
                        ids[i] = count++;
                        break;
                    }
                    if (slot.Hash == h && slot.Length == length
                        && (length <= ShortWord ? slot.Key == key : text.AsSpan(start, length).SequenceEqual(text.AsSpan(_wordStart[slot.Word], length))))
                    { ids[i] = slot.Id; break; }
                    at = (at + 1) & mask;
                }
            }
            return count;
        }

        // Reused per thread: the n-gram id arrays (slot per level in use at once) and the counting arrays.
        readonly int[][] _ids = [new int[256], new int[256], new int[256], new int[256], new int[256]];
        int[] _counts = new int[256];
        bool[] _seen = new bool[256], _covered = new bool[256];
        public readonly double[] Measures = new double[Rules.Length];

        Span<int> Ids(int slot, int length)
        {
            if (_ids[slot].Length < length) _ids[slot] = new int[Math.Max(length, 2 * _ids[slot].Length)];
            return _ids[slot].AsSpan(0, length);
        }

        static Span<T> Cleared<T>(ref T[] buffer, int length)
        {
            if (buffer.Length < length) buffer = new T[Math.Max(length, 2 * buffer.Length)];
            var span = buffer.AsSpan(0, length);
            span.Clear();
            return span;
        }

        /// <summary>Ids of (a[i], a[i+offset]) for every i where both exist; <paramref name="repeats"/>: some id repeats.</summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        Span<int> Level(ReadOnlySpan<int> a, int offset, int slot, ref bool repeats, out int distinct)
        {
            int count = Math.Max(0, a.Length - offset);
            var r = Ids(slot, count);
            _pairs.Clear(count);
            for (int i = 0; i < count; i++) r[i] = _pairs.IdOf(a[i], a[i + offset]);
            distinct = _pairs.Count;
            repeats = distinct < count;
            return r;
        }

        double Chars(int first, int n)
        {
            long c = 0;
            for (int j = first; j < first + n; j++) c += _wordLength[j];
            return c;
        }

        /// <summary>Characters of the most frequent n-gram (the first to reach the top count) × its count (<paramref name="best"/>); 0 below 2.</summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        double TopChars(ReadOnlySpan<int> g, int n, int distinct, out int best)
        {
            var counts = Cleared(ref _counts, distinct);
            int at = -1;
            best = 0;
            for (int i = 0; i < g.Length; i++)
                if (++counts[g[i]] > best) { best = counts[g[i]]; at = i; }
            return best < 2 ? 0 : Chars(at, n) * best;
        }

        /// <summary>Characters of the words covered by a later occurrence of an n-gram (each word once).</summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        double RepeatedChars(ReadOnlySpan<int> g, int n, int distinct)
        {
            var seen = Cleared(ref _seen, distinct);
            var covered = Cleared(ref _covered, _words);
            for (int i = 0; i < g.Length; i++)
            {
                if (!seen[g[i]]) { seen[g[i]] = true; continue; }
                covered.Slice(i, n).Fill(true);
            }
            long chars = 0;
            for (int i = 0; i < _words; i++) if (covered[i]) chars += _wordLength[i];
            return chars;
        }
    }

    /// <summary>Equality of two spans of the current text by their characters (ordinal).</summary>
    sealed class SpanComparer : IEqualityComparer<(int Start, int Length)>
    {
        public string Text = "";
        public bool Equals((int Start, int Length) a, (int Start, int Length) b) =>
            a.Length == b.Length && Text.AsSpan(a.Start, a.Length).SequenceEqual(Text.AsSpan(b.Start, b.Length));
        public int GetHashCode((int Start, int Length) s) => (int)XxHash3.HashToUInt64(MemoryMarshal.AsBytes(Text.AsSpan(s.Start, s.Length)));
    }
}
