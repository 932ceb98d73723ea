namespace Supercluster.Server.Security;

/// <summary>
/// Per-API-key request limits from <c>--api-key-file</c>: a line <c>KEY</c> (no limit) or <c>KEY N</c> (at most N
/// requests in any 60 seconds). A sliding log of each limited key's last N request times: exact (no burst of 2N across
/// a window edge as with fixed windows) and it names when the next request will be accepted (Retry-After).
/// </summary>
public sealed class KeyRateLimiter
{
    static readonly TimeSpan Window = TimeSpan.FromMinutes(1);
    readonly Dictionary<string, (int Limit, Queue<long> Times)> _keys;

    public KeyRateLimiter(IReadOnlyDictionary<string, int> perMinute) =>
        _keys = perMinute.ToDictionary(kv => kv.Key, kv => (kv.Value, new Queue<long>()), StringComparer.Ordinal);

    /// <summary>Reads the key file: keys, and the per-minute limits of those that have one. Comments start with #.</summary>
    public static (HashSet<string> Keys, Dictionary<string, int> PerMinute) ReadKeyFile(string file)
    {
        if (!File.Exists(file)) throw new BadInputException($"--api-key-file {file} does not exist");
        var keys = new HashSet<string>(StringComparer.Ordinal);
        var limits = new Dictionary<string, int>(StringComparer.Ordinal);
        int n = 0;
        foreach (var raw in File.ReadAllLines(file))
        {
            n++;
            var line = raw.Trim();
            if (line.Length == 0 || line.StartsWith('#')) continue;
            var parts = line.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
            if (parts.Length > 2 || parts.Length == 2 && !(int.TryParse(parts[1], out var rpm) && rpm > 0))
                throw new BadInputException($"--api-key-file {file} line {n}: expected 'KEY' or 'KEY REQUESTS_PER_MINUTE' (a positive integer)");
            keys.Add(parts[0]);
            if (parts.Length == 2) limits[parts[0]] = int.Parse(parts[1]);
        }
        if (keys.Count == 0) throw new BadInputException($"--api-key-file {file} holds no keys (one per line)");
        return (keys, limits);
    }

    /// <summary>The limit of <paramref name="key"/> per minute, or null when it has none.</summary>
    public int? LimitOf(string key) => _keys.TryGetValue(key, out var k) ? k.Limit : null;

    /// <summary>Counts a request of <paramref name="key"/> in; false when its limit is reached, with the wait until one is free.</summary>
    public bool TryAcquire(string key, out TimeSpan retryAfter)
    {
        retryAfter = TimeSpan.Zero;
        if (!_keys.TryGetValue(key, out var k)) return true;
        long now = Environment.TickCount64;
        lock (k.Times)
        {
            while (k.Times.Count > 0 && now - k.Times.Peek() >= Window.TotalMilliseconds) k.Times.Dequeue();
            if (k.Times.Count >= k.Limit)
            {
                retryAfter = TimeSpan.FromMilliseconds(k.Times.Peek() + Window.TotalMilliseconds - now);
                return false;
            }
            k.Times.Enqueue(now);
            return true;
        }
    }
}
