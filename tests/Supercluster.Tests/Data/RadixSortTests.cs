using Supercluster.Data.Pipeline;
using Xunit;

namespace Supercluster.Tests.Data;

public class RadixSortTests
{
    /// <summary>Reference: a stable sort by key (LINQ's OrderBy is stable), carrying the values.</summary>
    static (ulong[] Keys, int[] Values) Reference(ulong[] keys, int[] values)
    {
        var pairs = keys.Zip(values).OrderBy(p => p.First).ToArray();
        return (pairs.Select(p => p.First).ToArray(), pairs.Select(p => p.Second).ToArray());
    }

    [Theory]
    [InlineData(0, 0UL)]
    [InlineData(1, 0UL)]
    [InlineData(1000, ulong.MaxValue)]   // any 64-bit key
    [InlineData(5000, 0xFFUL)]           // one varying byte: seven passes skipped
    [InlineData(5000, 0xFF00_0000_0000_00FFUL)] // the lowest and highest bytes only
    [InlineData(3000, 7UL)]              // few distinct keys: long runs of equal keys must keep their order
    public void EqualsAStableSortByKey(int n, ulong mask)
    {
        var rng = new Random(n * 31 + (int)(mask & 0xFFFF));
        var keys = new ulong[n];
        for (int i = 0; i < n; i++) keys[i] = ((ulong)rng.NextInt64() ^ (ulong)rng.NextInt64() << 1) & mask;
        var values = Enumerable.Range(0, n).Select(i => i * 7 + 3).ToArray(); // distinct, so order among equal keys is visible
        var (wantKeys, wantValues) = Reference(keys, values);
        RadixSort.SortByKey(keys, values);
        Assert.Equal(wantKeys, keys);
        Assert.Equal(wantValues, values);
    }

    [Fact]
    public void AllEqualKeysLeaveTheValuesInPlace()
    {
        var keys = Enumerable.Repeat(0xDEAD_BEEF_0000_0001UL, 100).ToArray();
        var values = Enumerable.Range(0, 100).Reverse().ToArray();
        var want = values.ToArray();
        RadixSort.SortByKey(keys, values);
        Assert.Equal(want, values);
    }

    [Fact]
    public void LengthsMustMatch() => Assert.Throws<ArgumentException>(() => RadixSort.SortByKey(new ulong[3], new int[2]));
}
