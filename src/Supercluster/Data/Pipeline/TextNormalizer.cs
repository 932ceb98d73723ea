using System.Globalization;
using System.IO.Hashing;
using System.Text;

namespace Supercluster.Data.Pipeline;

/// <summary>
/// The text that deduplication compares: Unicode NFKC, case-folded (invariant lower case after NFKC), runs of white
/// space collapsed to one space, trimmed. "Hello  World" and "hello world\n" are the same document.
/// </summary>
public static class TextNormalizer
{
    public static string Normalize(string text)
    {
        var nfkc = text.IsNormalized(NormalizationForm.FormKC) ? text : text.Normalize(NormalizationForm.FormKC);
        var sb = new StringBuilder(nfkc.Length);
        bool space = false;
        foreach (var c in nfkc)
        {
            if (char.IsWhiteSpace(c)) { space = sb.Length > 0; continue; }
            if (space) { sb.Append(' '); space = false; }
            sb.Append(char.ToLowerInvariant(c));
        }
        return sb.ToString();
    }

    /// <summary>128-bit xxHash3 of the normalized text's UTF-8: the exact-duplicate key.</summary>
    public static UInt128 ExactKey(string normalized) => XxHash128.HashToUInt128(Encoding.UTF8.GetBytes(normalized));

    /// <summary>Words of normalized text: maximal runs of letters, digits and combining marks (punctuation separates).</summary>
    public static List<string> Words(string normalized)
    {
        var words = new List<string>();
        int start = -1;
        for (int i = 0; i <= normalized.Length; i++)
        {
            bool inWord = i < normalized.Length && IsWordChar(normalized, i);
            if (inWord && start < 0) start = i;
            else if (!inWord && start >= 0) { words.Add(normalized[start..i]); start = -1; }
        }
        return words;
    }

    /// <summary>Letters, digits, combining marks; astral characters (surrogate pairs: emoji, rare CJK) count as word characters.</summary>
    static bool IsWordChar(string s, int i) =>
        char.IsLetterOrDigit(s[i]) || char.IsSurrogate(s[i])
        || char.GetUnicodeCategory(s[i]) is UnicodeCategory.NonSpacingMark or UnicodeCategory.SpacingCombiningMark;
}
