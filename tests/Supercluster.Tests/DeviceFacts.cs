using Supercluster.Runtime;

namespace Supercluster.Tests;

/// <summary>
/// A test that needs a CUDA GPU: skipped (with the reason) where the driver sees none. Run them on a GPU machine with
/// SUPERCLUSTER_LIBTORCH pointing at a CUDA libtorch (PyTorch's torch/lib): bench/README.md says how.
/// </summary>
public sealed class CudaFactAttribute : FactAttribute
{
    public CudaFactAttribute()
    {
        if (CudaDriver.Devices().Count == 0) Skip = "needs a CUDA GPU (none visible to the driver here)";
        else if (string.IsNullOrEmpty(Environment.GetEnvironmentVariable(LibTorchLoader.EnvVar))) Skip = $"needs {LibTorchLoader.EnvVar} = a CUDA libtorch folder";
    }
}

/// <summary>
/// A test that needs NVRTC (no GPU): skipped where none is found. CI provides one (scripts/fetch-nvrtc.sh, exported as
/// SUPERCLUSTER_NVRTC), and there a missing or broken NVRTC fails instead of skipping.
/// </summary>
public sealed class NvrtcFactAttribute : FactAttribute
{
    public NvrtcFactAttribute()
    {
        if (!Nvrtc.Available && string.IsNullOrEmpty(Environment.GetEnvironmentVariable(Nvrtc.EnvVar)))
            Skip = $"needs NVRTC ({Nvrtc.Describe()})";
    }
}
