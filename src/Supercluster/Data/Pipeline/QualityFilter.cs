using System.Globalization;
using System.IO.Hashing;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

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
        readonly Dictionary<(int Start, int Length), int> _spans;
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
            _spans.Clear();
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

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        void Pass()
        {
            var t = _text;
            int lineFirst = -1, lineLast = -1, lineDots = 0;
            int i = 0;
            while (i < t.Length)
            {
                int k = ClassOf(t[i]);
                if ((k & Space) != 0)
                {
                    if (t[i] == '\n') { if (lineFirst >= 0) { Line(lineFirst, lineLast + 1 - lineFirst, lineDots); lineFirst = -1; } lineDots = 0; }
                    i++;
                    continue;
                }
                // A word: its characters in a loop of their own (the per-character state of the gaps stays out of it).
                int start = i, letter = 0, dotRun = 0;
                if (lineFirst < 0) lineFirst = i;
                do
                {
                    if ((k & (Dot | Hash | Ellipsis)) == 0) { dotRun = 0; letter |= k; }
                    else if ((k & Dot) != 0) { lineDots++; if (++dotRun == 3) { _ellipses++; dotRun = 0; } } // "..." counted without overlap
                    else { dotRun = 0; if ((k & Hash) != 0) _hashes++; else _ellipses++; }
                    if (++i == t.Length) break;
                    k = ClassOf(t[i]);
                } while ((k & Space) == 0);
                lineLast = i - 1;
                Word(start, i - start, (letter & Letter) != 0);
            }
            if (lineFirst >= 0) Line(lineFirst, lineLast + 1 - lineFirst, lineDots);
            // Not SearchValues<string>: 0.3 µs per document faster warm, but 25-45 ms of JIT in every process (not precompiled).
            _lorem = t.Contains("lorem ipsum", StringComparison.OrdinalIgnoreCase);
            _brace = t.Contains('{');
        }

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        void Word(int start, int length, bool letter)
        {
            if (_words == _wordStart.Length) { Array.Resize(ref _wordStart, _words * 2); Array.Resize(ref _wordLength, _words * 2); }
            _wordStart[_words] = start;
            _wordLength[_words++] = length;
            _wordChars += length;
            if (letter) _alphaWords++;
            // Stop words: 2–4 characters once .,!?;:"' are trimmed from both ends.
            int first = start, last = start + length - 1;
            while (first <= last && _text[first] < 128 && (AsciiClass[_text[first]] & Trim) != 0) first++;
            while (last >= first && _text[last] < 128 && (AsciiClass[_text[last]] & Trim) != 0) last--;
            int n = last - first + 1;
            if (n is >= 2 and <= 4 && MayStartStopWord(_text[first]) && IsStopWord(_text.AsSpan(first, n))) _stopWords++;
        }

        /// <summary>False for most words cheaply: an ASCII first character that no stop word starts with in either case.</summary>
        static bool MayStartStopWord(char c) => c >= 128 || (c | 0x20) is 't' or 'b' or 'o' or 'a' or 'h' or 'w';

        /// <summary>Gopher's stop words after invariant lower-casing (as string.ToLowerInvariant: İ → i, K (Kelvin) → k).</summary>
        static bool IsStopWord(ReadOnlySpan<char> w)
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

        // Word numbering: open addressing on the words' 64-bit xxHash3, equal text confirmed (a hash match alone is not trusted).
        int[] _slotWord = new int[1024], _slotId = new int[1024], _slotStamp = new int[1024];
        ulong[] _slotHash = new ulong[1024];
        int _slotGeneration;

        /// <summary>Ids of the words (equal text, equal id; in order of first appearance) into <paramref name="ids"/>; returns how many distinct.</summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        int NumberWords(Span<int> ids)
        {
            int n = _words, count = 0;
            if (2 * n > _slotWord.Length)
            {
                int size = (int)System.Numerics.BitOperations.RoundUpToPowerOf2((uint)(2 * n));
                (_slotWord, _slotId, _slotStamp, _slotHash, _slotGeneration) = (new int[size], new int[size], new int[size], new ulong[size], 0);
            }
            if (++_slotGeneration == int.MaxValue) { Array.Clear(_slotStamp); _slotGeneration = 1; }
            int mask = _slotWord.Length - 1;
            for (int i = 0; i < n; i++)
            {
                var word = _text.AsSpan(_wordStart[i], _wordLength[i]);
                ulong h = XxHash3.HashToUInt64(MemoryMarshal.AsBytes(word));
                int slot = (int)(h >> 32) & mask;
                while (true)
                {
                    if (_slotStamp[slot] != _slotGeneration)
                    {
                        (_slotStamp[slot], _slotHash[slot], _slotWord[slot], _slotId[slot]) = (_slotGeneration, h, i, count);
                        ids[i] = count++;
                        break;
                    }
                    int j = _slotWord[slot];
                    if (_slotHash[slot] == h && word.SequenceEqual(_text.AsSpan(_wordStart[j], _wordLength[j]))) { ids[i] = _slotId[slot]; break; }
                    slot = (slot + 1) & mask;
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
