#!/usr/bin/env bash
# Unpacks Debian 12's NVRTC (CUDA 11.8, from the non-free archive) into a private folder and prints the library's path.
# NVRTC compiles CUDA C to PTX without a GPU, so the fused kernels' sources are compile-checked on GPU-less machines
# (CI, laptops). It touches nothing system-wide: its own apt lists, `apt-get download`, `dpkg -x`. On a GPU machine the
# NVRTC that comes with PyTorch or the CUDA toolkit is used instead (see src/Supercluster/Runtime/Nvrtc.cs).
#   export SUPERCLUSTER_NVRTC=$(scripts/fetch-nvrtc.sh)
set -euo pipefail
dest="${XDG_CACHE_HOME:-$HOME/.cache}/supercluster/nvrtc"
lib="$dest/usr/lib/x86_64-linux-gnu/libnvrtc.so.11.2"
if [ ! -e "$lib" ]; then
  [ "$(dpkg --print-architecture 2>/dev/null)" = amd64 ] || { echo "fetch-nvrtc: only for amd64 Debian/Ubuntu" >&2; exit 1; }
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  mkdir -p "$work/lists/partial" "$work/debs"
  echo "deb http://deb.debian.org/debian bookworm main non-free" > "$work/sources.list"
  mkdir -p "$work/cache/archives/partial"
  o=(-o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache"
     -o Debug::NoLocking=1 -o APT::Sandbox::User="$(id -un)")
  apt-get "${o[@]}" -q update >/dev/null
  (cd "$work/debs" && apt-get "${o[@]}" -q download libnvrtc11.2 libnvrtc-builtins11.8 >/dev/null 2>&1)
  mkdir -p "$dest.tmp"
  for f in "$work"/debs/*.deb; do dpkg -x "$f" "$dest.tmp"; done
  rm -rf "$dest" && mv "$dest.tmp" "$dest"
fi
echo "$lib"
