namespace Supercluster.Server.OpenAi;

/// <summary>
/// Finds stop sequences in streamed text. Text that could be the start of a stop sequence is held back until it is
/// clear, so a stream never shows part of a stop sequence; the stop sequence itself is never returned.
/// </summary>
public sealed class StopMatcher(IReadOnlyList<string> stops)
{
    readonly string[] _stops = stops.Where(s => s.Length > 0).ToArray();
    string _held = "";

    public bool Stopped { get; private set; }

    /// <summary>Adds new text; returns the text now safe to show.</summary>
    public string Feed(string delta)
    {
        if (Stopped) return "";
        var text = _held + delta;
        int cut = -1;
        foreach (var s in _stops)
        {
            int i = text.IndexOf(s, StringComparison.Ordinal);
            if (i >= 0 && (cut < 0 || i < cut)) cut = i;
        }
        if (cut >= 0) { Stopped = true; _held = ""; return text[..cut]; }
        int hold = 0;
        foreach (var s in _stops)
            for (int n = Math.Min(s.Length - 1, text.Length); n > hold; n--)
                if (text.AsSpan(text.Length - n).SequenceEqual(s.AsSpan(0, n))) { hold = n; break; }
        _held = text[^hold..];
        return text[..^hold];
    }

    /// <summary>Text held back at the end of generation (it turned out not to be a stop sequence).</summary>
    public string Flush() { var h = _held; _held = ""; return Stopped ? "" : h; }
}
