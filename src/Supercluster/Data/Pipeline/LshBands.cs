using System.IO.Hashing;
using System.Runtime.InteropServices;

namespace Supercluster.Data.Pipeline;

/// <summary>
/// Locality-sensitive hashing by banding (Leskovec, Rajaraman, Ullman, ch. 3): the signature is cut into b bands of
/// r rows; two documents are candidates when any band is equal, probability 1 − (1 − Jʳ)ᵇ. Candidates are verified
/// afterwards, so the bands favour recall: (b, r) minimises the false-positive area ∫₀ᵗ P(s) ds among b·r ≤ P
/// subject to P(t) ≥ 0.95 at the threshold t itself (falling back to the highest P(t) when none reaches it).
/// </summary>
public sealed record LshBands(int Bands, int Rows)
{
    public const double MinRecallAtThreshold = 0.95;

    public static LshBands Choose(int permutations, double threshold)
    {
        if (threshold is <= 0 or > 1 || double.IsNaN(threshold))
            throw new BadInputException($"--near-threshold {threshold}: expected 0 < T <= 1");
        LshBands? best = null;
        double bestArea = double.MaxValue, bestRecall = -1;
        for (int b = 1; b <= permutations; b++)
            for (int r = 1; b * r <= permutations; r++)
            {
                var lsh = new LshBands(b, r);
                double recall = lsh.CandidateProbability(threshold);
                double area = lsh.FalsePositiveArea(threshold);
                bool ok = recall >= MinRecallAtThreshold;
                bool bestOk = bestRecall >= MinRecallAtThreshold;
                if (best is null || (ok && (!bestOk || area < bestArea)) || (!ok && !bestOk && recall > bestRecall))
                    (best, bestArea, bestRecall) = (lsh, area, recall);
            }
        return best!;
    }

    /// <summary>P(candidate | Jaccard s) = 1 − (1 − sʳ)ᵇ.</summary>
    public double CandidateProbability(double s) => 1 - Math.Pow(1 - Math.Pow(s, Rows), Bands);

    double FalsePositiveArea(double t)
    {
        const int Steps = 200;
        double sum = 0;
        for (int i = 0; i < Steps; i++) sum += CandidateProbability((i + 0.5) * t / Steps) * t / Steps;
        return sum;
    }

    /// <summary>Key of band <paramref name="band"/>: xxHash3 of its rows, seeded by the band index so bands never collide.</summary>
    public ulong Key(ReadOnlySpan<uint> signature, int band) =>
        XxHash3.HashToUInt64(MemoryMarshal.AsBytes(signature.Slice(band * Rows, Rows)), band);
}
