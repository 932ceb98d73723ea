using System.Diagnostics;

namespace Supercluster.Runtime;

/// <summary>
/// Progress for long work: on a terminal one line redrawn in place (at most 5 times a second);
/// when stderr is redirected, a plain log line every <c>logEvery</c> so logs stay readable.
/// </summary>
public sealed class ProgressLine(TextWriter? writer = null, TimeSpan? logEvery = null)
{
    readonly TextWriter _out = writer ?? Console.Error;
    readonly bool _terminal = writer is null && !Console.IsErrorRedirected;
    readonly TimeSpan _logEvery = logEvery ?? TimeSpan.FromSeconds(10);
    readonly Stopwatch _clock = Stopwatch.StartNew();
    TimeSpan _last = TimeSpan.MinValue;
    int _width;

    /// <summary>Elapsed time since this progress started.</summary>
    public TimeSpan Elapsed => _clock.Elapsed;

    /// <summary>Shows <paramref name="text"/> if enough time has passed since the last update (or <paramref name="force"/>).</summary>
    public void Update(string text, bool force = false)
    {
        var now = _clock.Elapsed;
        var gap = _terminal ? TimeSpan.FromMilliseconds(200) : _logEvery;
        if (!force && _last != TimeSpan.MinValue && now - _last < gap) return; // MinValue: nothing shown yet (and MinValue arithmetic overflows)
        _last = now;
        if (_terminal)
        {
            _out.Write('\r' + text.PadRight(_width));
            _width = text.Length;
        }
        else
        {
            _out.WriteLine(text);
        }
    }

    /// <summary>Ends the in-place line (terminal) so normal output can follow.</summary>
    public void Done(string? text = null)
    {
        if (text is not null) Update(text, force: true);
        if (_terminal && _width > 0) _out.WriteLine();
        _width = 0;
    }

    /// <summary>"1h02m", "3m05s", "42s": short durations for ETAs.</summary>
    public static string Format(TimeSpan t) =>
        t.TotalHours >= 1 ? $"{(int)t.TotalHours}h{t.Minutes:00}m" :
        t.TotalMinutes >= 1 ? $"{(int)t.TotalMinutes}m{t.Seconds:00}s" : $"{t.TotalSeconds:0}s";
}
