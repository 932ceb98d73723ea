using Supercluster.Runtime;

namespace Supercluster.Tests.Runtime;

public class RuntimeTests
{
    static string ShimPath()
    {
        string p = Path.Combine(AppContext.BaseDirectory, "runtimes", "linux-x64", "native", "libLibTorchSharp.so");
        Assert.True(File.Exists(p), p);
        return p;
    }

    [Fact]
    public void Marking_the_marker_version_weak_changes_only_that_requirement()
    {
        var bytes = File.ReadAllBytes(ShimPath());
        var before = ElfVersionPatcher.ReadVersionNeeds(bytes);
        var marker = Assert.Single(before, n => n.Version == "GLIBCXX_3.4.32");
        Assert.Equal("libstdc++.so.6", marker.File);
        Assert.False(marker.IsWeak);

        Assert.Equal(1, ElfVersionPatcher.MarkWeak(bytes, "GLIBCXX_3.4.32"));
        var after = ElfVersionPatcher.ReadVersionNeeds(bytes);
        Assert.Equal(before.Count, after.Count);
        for (int i = 0; i < before.Count; i++)
        {
            Assert.Equal(before[i].Version, after[i].Version);
            Assert.Equal(before[i].Version == "GLIBCXX_3.4.32", after[i].IsWeak);
        }
        Assert.Equal(0, ElfVersionPatcher.MarkWeak(bytes, "GLIBCXX_3.4.32")); // idempotent
        Assert.Throws<InvalidDataException>(() => ElfVersionPatcher.ReadVersionNeeds(new byte[100]));
    }

    [Fact]
    public void Libtorch_loads_and_reports_where_from()
    {
        var r = LibTorchLoader.EnsureLoaded();
        Assert.True(File.Exists(Path.Combine(r.LibTorchDir, "libtorch.so")));
        // The patched copy is used exactly when this libstdc++ lacks the marker version.
        bool hasMarker = File.ReadAllText("/usr/lib/x86_64-linux-gnu/libstdc++.so.6".Replace("x86_64-linux-gnu", RuntimeLibDir()), System.Text.Encoding.Latin1).Contains("GLIBCXX_3.4.32");
        Assert.Equal(!hasMarker, r.Patched);
        using var t = TorchSharp.torch.ones(3);
        Assert.Equal(3f, t.sum().item<float>());
        var rows = EnvironmentReport.Collect();
        Assert.Contains(rows, row => row.Key == "libtorch loaded from" && row.Value.Contains(r.LibTorchDir));
    }

    static string RuntimeLibDir() => System.Runtime.InteropServices.RuntimeInformation.ProcessArchitecture == System.Runtime.InteropServices.Architecture.Arm64 ? "aarch64-linux-gnu" : "x86_64-linux-gnu";

    [Fact]
    public void A_folder_without_libtorch_is_a_clear_error()
    {
        using var dir = new TempDir();
        var e = Assert.Throws<BadInputException>(() => LibTorchLoader.ResolveLibTorchDir(dir.Path));
        Assert.Contains(dir.Path, e.Message);
        Assert.Contains("libtorch.so", e.Message);
        Assert.True(File.Exists(Path.Combine(LibTorchLoader.ResolveLibTorchDir(null), "libtorch.so")));
    }
}
