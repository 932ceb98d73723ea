using System.Net;
using System.Net.Sockets;
using System.Text.RegularExpressions;

namespace Supercluster.Data.Pipeline;

/// <summary>
/// Replaces e-mail addresses, phone numbers and IP addresses with <c>&lt;EMAIL&gt;</c>, <c>&lt;PHONE&gt;</c>,
/// <c>&lt;IP&gt;</c>. Patterns favour precision over recall (look-alikes such as dates, version numbers, order ids,
/// @handles and times are left alone); the exact rules are in docs/data.md.
/// </summary>
public static partial class PiiScrubber
{
    public const string Email = "<EMAIL>", Phone = "<PHONE>", Ip = "<IP>";

    // local@domain.tld: a dotted domain with a letter TLD of 2+ characters.
    [GeneratedRegex(@"(?<![\w.+%-])[A-Za-z0-9](?:[A-Za-z0-9._%+-]{0,62}[A-Za-z0-9_%+-])?@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-]|\.\w)")]
    private static partial Regex EmailPattern();

    // Dotted quad with every octet 0–255, not part of a longer dotted number (1.2.3.4.5) or version (v1.2.3.4 is kept).
    [GeneratedRegex(@"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\w.]|\.\d)")]
    private static partial Regex Ipv4Pattern();

    // Candidates for IPv6: hex groups and colons with at least two colons; confirmed by IPAddress.TryParse.
    [GeneratedRegex(@"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")]
    private static partial Regex Ipv6Candidate();

    // North American numbers written with separators or parentheses: (555) 123-4567, 555-123-4567, +1 555.123.4567.
    [GeneratedRegex(@"(?<![\w+\-.])(?:\+?1[\s.-])?(?:\(\d{3}\)\s?|\d{3}[\s.-])\d{3}[\s.-]\d{4}(?![\w\-]|\.\d)")]
    private static partial Regex NanpPattern();

    // International numbers with a leading '+': country code then 6–14 more digits in groups separated by space, '.' or '-'.
    [GeneratedRegex(@"(?<![\w+])\+\d{1,3}(?:[\s.-]?\(?\d{1,5}\)?){2,6}(?![\w\-]|\.\d)")]
    private static partial Regex IntlPattern();

    /// <summary>Scrubbed text; <paramref name="counts"/> (email, phone, ip) is incremented per replacement.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)] // once per document
    public static string Scrub(string text, long[] counts)
    {
        if (text.IndexOf('@') >= 0) text = EmailPattern().Replace(text, _ => { counts[0]++; return Email; });
        // Phone numbers and IPv4 addresses hold digits (\d: any Unicode decimal digit); many posts have none, and then
        // these patterns cannot match. A placeholder adds no digit, '+', '.' or ':', so each test holds for the steps after it.
        if (!HasDigit(text)) return text;
        if (text.IndexOf('+') >= 0) text = IntlPattern().Replace(text, m => DigitCount(m.Value) is >= 8 and <= 15 ? Count(counts, 1, Phone) : m.Value);
        text = NanpPattern().Replace(text, _ => Count(counts, 1, Phone));
        if (text.IndexOf('.') >= 0) text = Ipv4Pattern().Replace(text, _ => Count(counts, 2, Ip));
        if (text.Contains("::") || text.AsSpan().Count(':') >= 7)
            text = Ipv6Candidate().Replace(text, m =>
                m.Value.Any(char.IsAsciiHexDigit) && IPAddress.TryParse(m.Value, out var a) && a.AddressFamily == AddressFamily.InterNetworkV6
                    ? Count(counts, 2, Ip) : m.Value);
        return text;
    }

    /// <summary>Whether <paramref name="s"/> holds a character that the patterns' \d matches (char.IsDigit: Unicode Nd).</summary>
    static bool HasDigit(ReadOnlySpan<char> s)
    {
        if (s.IndexOfAnyInRange('0', '9') >= 0) return true;
        int other = s.IndexOfAnyExceptInRange('\0', '\u007F'); // ASCII has no other digits
        if (other < 0) return false;
        foreach (var c in s[other..]) if (char.IsDigit(c)) return true;
        return false;
    }

    static string Count(long[] counts, int kind, string placeholder) { counts[kind]++; return placeholder; }

    static int DigitCount(string s) => s.Count(char.IsAsciiDigit);

    public static readonly string[] Kinds = ["email", "phone", "ip"];
}
