namespace Supercluster.Distributed;

/// <summary>
/// Liveness for the supervisor: each rank rewrites <c>DIR/rank-R</c> with its last finished step after every step.
/// A rank whose file stops changing for longer than the hang timeout is considered hung.
/// </summary>
public sealed class Heartbeat(string path)
{
    public const string DirVariable = "SUPERCLUSTER_HEARTBEAT_DIR";

    public static Heartbeat? FromEnvironment(int rank) =>
        Environment.GetEnvironmentVariable(DirVariable) is { Length: > 0 } dir ? new Heartbeat(Path.Combine(dir, $"rank-{rank}")) : null;

    public void Beat(long step)
    {
        string tmp = path + ".tmp";
        File.WriteAllText(tmp, $"{step} {DateTimeOffset.UtcNow.ToUnixTimeMilliseconds()}");
        File.Move(tmp, path, overwrite: true);
    }

    /// <summary>(rank, last step, when written) for every rank file in <paramref name="dir"/>.</summary>
    public static IReadOnlyList<(int Rank, long Step, DateTime Written)> Read(string dir)
    {
        if (!Directory.Exists(dir)) return [];
        var list = new List<(int, long, DateTime)>();
        foreach (var f in Directory.GetFiles(dir, "rank-*"))
        {
            if (f.EndsWith(".tmp") || !int.TryParse(Path.GetFileName(f)["rank-".Length..], out int rank)) continue;
            try
            {
                var parts = File.ReadAllText(f).Split(' ');
                list.Add((rank, long.Parse(parts[0]), File.GetLastWriteTimeUtc(f)));
            }
            catch (Exception e) when (e is IOException or FormatException or IndexOutOfRangeException) { }
        }
        return list;
    }
}
