namespace Supercluster.Training;

/// <summary>Linear warmup to the peak rate, then cosine decay to <c>peak · minRatio</c> at the last step (as in GPT-3, nanoGPT).</summary>
public sealed record LrSchedule(double Peak, int WarmupSteps, int TotalSteps, double MinRatio)
{
    public double At(int step)
    {
        if (step < WarmupSteps) return Peak * (step + 1) / WarmupSteps;
        double min = Peak * MinRatio;
        if (TotalSteps <= WarmupSteps) return Peak;
        double progress = Math.Min(1.0, (double)(step - WarmupSteps) / Math.Max(1, TotalSteps - 1 - WarmupSteps));
        return min + 0.5 * (1 + Math.Cos(Math.PI * progress)) * (Peak - min);
    }
}
