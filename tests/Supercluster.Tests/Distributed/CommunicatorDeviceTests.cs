using Supercluster.Distributed;
using Supercluster.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace Supercluster.Tests.Distributed;

/// <summary>
/// Communicators accept tensors on any device: <see cref="Staging"/> hands a native collective either the tensor itself
/// (contiguous, on the backend's device) or a contiguous copy there, and writes the result back. MPI stages through
/// host memory and NCCL through its GPU with this same code; the NCCL side needs GPUs and is not run here.
/// </summary>
public class CommunicatorDeviceTests
{
    public CommunicatorDeviceTests() => TorchSetup.Init();

    [Fact]
    public void A_contiguous_tensor_on_the_backends_device_is_passed_as_it_is()
    {
        using var t = arange(6, dtype: ScalarType.Float32);
        IntPtr seen = 0;
        Staging.Run(t, CPU, x => { seen = LibTorchLoader.DataPtr(x); x.mul_(2); });
        Assert.Equal(LibTorchLoader.DataPtr(t), seen);
        Assert.Equal([0f, 2, 4, 6, 8, 10], t.data<float>().ToArray());
    }

    [Fact]
    public void A_strided_view_is_staged_contiguously_and_the_result_lands_in_the_view_only()
    {
        using var full = arange(12, dtype: ScalarType.Float32).view(3, 4);
        using var column = full.select(1, 1);                                // [1, 5, 9], stride 4: no native library may read it in place
        Assert.False(column.is_contiguous());
        Staging.Run(column, CPU, x =>
        {
            Assert.True(x.is_contiguous());
            Assert.Equal([1f, 5, 9], x.data<float>().ToArray());            // copied in
            x.add_(100);
        });
        Assert.Equal([0f, 101, 2, 3, 4, 105, 6, 7, 8, 109, 10, 11], full.reshape(-1).data<float>().ToArray());
    }

    [Fact]
    public void An_output_is_not_copied_in_but_is_written_back()
    {
        using var full = zeros(2, 3);
        using var output = full.t();                                         // [3, 2], not contiguous
        Staging.Run(output, CPU, x => x.copy_(arange(6, dtype: ScalarType.Float32).view(3, 2)), copyIn: false);
        Assert.Equal([0f, 2, 4, 1, 3, 5], full.reshape(-1).data<float>().ToArray());
    }

    [Fact]
    public void Device_identity_includes_the_gpu_index()
    {
        using var t = ones(2);
        Assert.True(Staging.On(t, CPU));
        Assert.False(Staging.On(t, new Device(DeviceType.CUDA, 0)));         // a CPU tensor is never NCCL's to read
    }

    [Fact]
    public void A_single_process_gathers_tensors_from_any_layout_and_measures_no_communication()
    {
        using var comm = new SingleProcess();
        Assert.Equal(DeviceType.CPU, comm.Device.type);
        using var input = arange(4, dtype: ScalarType.Float64).view(2, 2).t();   // not contiguous
        using var output = zeros(4, dtype: ScalarType.Float64);
        comm.AllGather(input.reshape(-1), output);
        Assert.Equal([0.0, 2, 1, 3], output.data<double>().ToArray());
        Assert.Equal(0, comm.TakeCommunicationSeconds());
    }
}
