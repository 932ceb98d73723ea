namespace Supercluster.Runtime;

/// <summary>
/// Hash for 64-bit keys that pack two 32-bit ids (<c>left &lt;&lt; 32 | right</c>). <see cref="long.GetHashCode"/> is
/// <c>left ^ right</c>, which maps such keys of small ids onto a few hash codes (long chains, quadratic time);
/// this mixes all 64 bits (the murmur3 finalizer).
/// </summary>
public sealed class PairKeyComparer : IEqualityComparer<long>
{
    public static readonly PairKeyComparer Instance = new();

    public bool Equals(long a, long b) => a == b;

    public int GetHashCode(long key)
    {
        ulong h = (ulong)key;
        h ^= h >> 33;
        h *= 0xFF51AFD7ED558CCDUL;
        h ^= h >> 33;
        h *= 0xC4CEB9FE1A85EC53UL;
        h ^= h >> 33;
        return (int)h;
    }
}
