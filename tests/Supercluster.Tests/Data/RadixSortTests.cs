using Supercluster.Data.Pipeline;
using Xunit;

namespace Supercluster.Tests.Data;

public class RadixSortTests
{
    /// <summary>Reference: a stable sort by key (LINQ's OrderBy is stable).</summary>
    static BandKey[] Reference(BandKey[] items) => items.OrderBy(p => p.Key).ToArray();

    [Theory]
    [InlineData(0, 0UL)]
    [InlineData(1, 0UL)]
    [InlineData(31, ulong.MaxValue)]     // insertion sort only
    [InlineData(1000, ulong.MaxValue)]   // any 64-bit key: top-bit buckets of a few keys
    [InlineData(200_000, ulong.MaxValue)] // the most top bits (20)
    [InlineData(5000, 0xFFUL)]           // one varying low byte: one bucket, finished by the LSD sort with seven passes skipped
    [InlineData(5000, 0xFF00_0000_0000_00FFUL)] // the lowest and highest bytes only: big buckets
    [InlineData(3000, 7UL)]              // few distinct keys: long runs of equal keys must keep their order
    [InlineData(4000, 0xFFFF_0000_0000_0000UL)] // top bits only: buckets of equal keys
    public void EqualsAStableSortByKey(int n, ulong mask)
    {
        var rng = new Random(n * 31 + (int)(mask & 0xFFFF));
        var items = new BandKey[n];
        for (int i = 0; i < n; i++) items[i] = new(((ulong)rng.NextInt64() ^ (ulong)rng.NextInt64() << 1) & mask, i * 7 + 3); // distinct ids: order among equal keys is visible
        var want = Reference(items);
        RadixSort.SortByKey(items, new BandKey[n + 5]);
        Assert.Equal(want, items);
    }

    [Fact]
    public void AllEqualKeysLeaveTheIdsInPlace()
    {
        var items = Enumerable.Range(0, 100).Reverse().Select(i => new BandKey(0xDEAD_BEEF_0000_0001UL, i)).ToArray();
        var want = items.ToArray();
        RadixSort.SortByKey(items, new BandKey[100]);
        Assert.Equal(want, items);
    }

    [Fact]
    public void ScratchMustHoldTheKeys() => Assert.Throws<ArgumentException>(() => RadixSort.SortByKey(new BandKey[40], new BandKey[39]));
}
