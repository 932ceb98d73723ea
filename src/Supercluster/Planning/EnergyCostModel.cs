namespace Supercluster.Planning;

/// <summary>Prices, power and carbon inputs. A GPU purchase price (capex) replaces the hourly price when given.</summary>
public sealed record OperationsSpec(
    double NodeOverheadWatts = 4600,   // DGX H100: 10.2 kW max system power − 8 × 700 W GPUs (CPUs, DRAM, NICs, fans)
    double Pue = 1.2,                  // hyperscale data centres report 1.1–1.2 (Google 2023: 1.10); Uptime 2023 average 1.58
    double PricePerGpuHour = 2.0,      // USD, typical 2024–25 H100 reserved cloud price
    double PricePerGpu = 0,            // USD capex per GPU; 0 = rent by the hour
    double PricePerKwh = 0.08,         // USD, US industrial average 2024 (EIA): ~0.08
    double CarbonKgPerKwh = 0,         // grid intensity; 0 = not reported (US average ≈ 0.37, EIA 2023)
    double FailuresPer1000NodeDays = 0, // 0 = ReliabilityModel default
    double CheckpointWriteGBs = 2000,  // aggregate; Llama 3 §3.3.4: Tectonic sustained 2 TB/s
    double RestartMinutes = 10)        // reschedule + reload + warm-up
{
    public double FailureRate => FailuresPer1000NodeDays > 0 ? FailuresPer1000NodeDays : ReliabilityModel.DefaultFailuresPer1000NodeDays;

    public void Validate()
    {
        if (NodeOverheadWatts < 0) throw new BadInputException($"--node-overhead-w {NodeOverheadWatts} must not be negative");
        if (Pue < 1) throw new BadInputException($"--pue {Pue} must be at least 1");
        if (PricePerGpuHour < 0) throw new BadInputException($"--price-gpu-hour {PricePerGpuHour} must not be negative");
        if (PricePerGpu < 0) throw new BadInputException($"--price-gpu {PricePerGpu} must not be negative");
        if (PricePerKwh < 0) throw new BadInputException($"--price-kwh {PricePerKwh} must not be negative");
        if (CarbonKgPerKwh < 0) throw new BadInputException($"--carbon-kg-per-kwh {CarbonKgPerKwh} must not be negative");
        if (FailuresPer1000NodeDays < 0) throw new BadInputException($"--failures-per-1000-node-days {FailuresPer1000NodeDays} must not be negative");
        if (CheckpointWriteGBs <= 0) throw new BadInputException($"--ckpt-write-gbs {CheckpointWriteGBs} must be positive");
        if (RestartMinutes < 0) throw new BadInputException($"--restart-minutes {RestartMinutes} must not be negative");
    }
}

public sealed record EnergyCost(double FacilityMegawatts, double EnergyMWh, double GpuHours, double ComputeCostUsd, double EnergyCostUsd,
    double CarbonTonnes)
{
    public double TotalCostUsd => ComputeCostUsd + EnergyCostUsd;
}

/// <summary>
/// Facility power = (GPUs × TDP + nodes × node overhead) × PUE (GPUs assumed at TDP while training, a slight over-estimate).
/// Energy = power × wall-clock. Cost = GPU-hours × hourly price (or GPUs × capex) + energy × price per kWh
/// (the hourly price is taken as excluding facility power).
/// </summary>
public static class EnergyCostModel
{
    public static EnergyCost Estimate(long gpus, long nodes, double gpuTdpWatts, OperationsSpec ops, double wallSeconds)
    {
        double megawatts = (gpus * gpuTdpWatts + nodes * ops.NodeOverheadWatts) * ops.Pue / 1e6;
        double hours = wallSeconds / 3600;
        double mwh = megawatts * hours;
        double gpuHours = gpus * hours;
        bool owned = ops.PricePerGpu > 0;
        double compute = owned ? gpus * ops.PricePerGpu : gpuHours * ops.PricePerGpuHour;
        double energy = mwh * 1000 * ops.PricePerKwh;
        return new(megawatts, mwh, gpuHours, compute, energy, mwh * 1000 * ops.CarbonKgPerKwh / 1000);
    }
}
