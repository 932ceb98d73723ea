using System.Runtime.CompilerServices;

namespace Supercluster.Data.Pipeline;

/// <summary>
/// Dense ids for pairs of ints, in order of first appearance (open addressing, linear probing): the quality filter's
/// n-gram numbering, which runs nine times per document and so avoids <see cref="Dictionary{TKey,TValue}"/>'s overhead.
/// Reused across documents; <see cref="Clear"/> is O(1) (a generation stamp per slot).
/// </summary>
public sealed class PairIds
{
    long[] _keys = new long[1024];
    int[] _ids = new int[1024];
    int[] _stamp = new int[1024];
    int _generation = 1, _mask = 1023;

    public int Count { get; private set; }

    /// <summary>Forgets every pair; <paramref name="expected"/> pairs will fit without rehashing (load ≤ 1/2).</summary>
    public void Clear(int expected)
    {
        Count = 0;
        if (expected * 2 > _keys.Length)
        {
            int size = (int)Math.Min(1L << 30, System.Numerics.BitOperations.RoundUpToPowerOf2((uint)Math.Max(1024, expected * 2)));
            _keys = new long[size]; _ids = new int[size]; _stamp = new int[size];
            _mask = size - 1;
            _generation = 1;
            return;
        }
        if (++_generation == int.MaxValue) { Array.Clear(_stamp); _generation = 1; }
    }

    /// <summary>The id of (<paramref name="a"/>, <paramref name="b"/>), a new one (= Count before) if unseen.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining | MethodImplOptions.AggressiveOptimization)]
    public int IdOf(int a, int b)
    {
        long key = ((long)a << 32) | (uint)b;
        ulong h = (ulong)key * 0x9E3779B97F4A7C15UL;
        int slot = (int)(h >> 40) & _mask;
        while (true)
        {
            if (_stamp[slot] != _generation)
            {
                _stamp[slot] = _generation;
                _keys[slot] = key;
                return _ids[slot] = Count++;
            }
            if (_keys[slot] == key) return _ids[slot];
            slot = (slot + 1) & _mask;
        }
    }
}
