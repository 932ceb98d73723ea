#!/usr/bin/env bash
# A portable bundle for GPU nodes without .NET: the published CLI plus a .NET runtime, without the CPU libtorch
# (GPU nodes bring CUDA libtorch: point SUPERCLUSTER_LIBTORCH at an installed PyTorch's torch/lib).
#   bench/pack.sh [OUT.tar.xz]        → run as: tar xf OUT.tar.xz && supercluster-bundle/supercluster env
set -euo pipefail
cd "$(dirname "$0")/.."
out="$(realpath -m "${1:-out/supercluster-bundle.tar.xz}")"
stage=$(mktemp -d)
root="$stage/supercluster-bundle"
mkdir -p "$root/dotnet/shared" "$(dirname "$out")"
dotnet publish src/Supercluster.Cli -c Release -o "$root/app" -p:UseAppHost=false --nologo -v quiet -clp:ErrorsOnly >&2
# Keep TorchSharp's shim; drop the 600 MB CPU libtorch.
find "$root/app" -name '*.so*' ! -name 'libLibTorchSharp.so' -delete
find "$root/app/runtimes" -mindepth 1 -maxdepth 1 ! -name 'linux-x64' -exec rm -rf {} + 2>/dev/null || true
dotnet_root="$(dirname "$(readlink -f "$(command -v dotnet)")")"
version=$(dotnet --list-runtimes | awk '/Microsoft.NETCore.App 10\./ { v = $2 } END { print v }')
cp -a "$dotnet_root/dotnet" "$dotnet_root/host" "$root/dotnet/"
for fw in Microsoft.NETCore.App Microsoft.AspNetCore.App; do
  [ -d "$dotnet_root/shared/$fw/$version" ] && mkdir -p "$root/dotnet/shared/$fw" && cp -a "$dotnet_root/shared/$fw/$version" "$root/dotnet/shared/$fw/"
done
cat > "$root/supercluster" <<'SH'
#!/usr/bin/env bash
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export DOTNET_ROOT="$here/dotnet"
if [ -z "${SUPERCLUSTER_LIBTORCH:-}" ] && command -v python3 >/dev/null; then
  SUPERCLUSTER_LIBTORCH="$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))' 2>/dev/null || true)"
  export SUPERCLUSTER_LIBTORCH
fi
exec "$here/dotnet/dotnet" "$here/app/Supercluster.Cli.dll" "$@"
SH
chmod +x "$root/supercluster"
# The shim's imports, for bench/check-libtorch.py on the GPU node (which may have no binutils): which of them a given
# libtorch (e.g. PyTorch 2.11's, when TorchSharp 0.107 was built for 2.10) does not export.
if command -v nm >/dev/null; then
  nm -D --undefined-only "$root/app/runtimes/linux-x64/native/libLibTorchSharp.so" 2>/dev/null | awk '$1 == "U" { print $2 }' > "$root/libtorchsharp-imports.txt" \
    || nm -D --undefined-only "$root/app/libLibTorchSharp.so" | awk '$1 == "U" { print $2 }' > "$root/libtorchsharp-imports.txt"
fi
tar -C "$stage" -cJf "$out" supercluster-bundle
rm -rf "$stage"
echo "$out ($(du -h "$out" | cut -f1))"
