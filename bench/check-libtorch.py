#!/usr/bin/env python3
"""Which symbols that TorchSharp's shim (libLibTorchSharp.so) imports does a given libtorch not export?

TorchSharp 0.107 is built against libtorch 2.10; a GPU node may only have another PyTorch (2.11 here). A missing
function surfaces only when it is first called (lazy binding), so list them all up front:

    python3 bench/check-libtorch.py IMPORTS.txt [TORCH_LIB_DIR]

IMPORTS.txt: `nm -D --undefined-only libLibTorchSharp.so` names, one per line (bench/pack.sh writes it into the bundle).
TORCH_LIB_DIR: default the torch/lib of this python's PyTorch. Prints the missing symbols (demangled where c++filt is
there) and exits 1 if any is missing.
"""
import ctypes, os, shutil, subprocess, sys


def main():
    imports = [l.split("@")[0].strip() for l in open(sys.argv[1]) if l.strip()]
    if len(sys.argv) > 2:
        lib = sys.argv[2]
    else:
        import torch
        lib = os.path.join(os.path.dirname(torch.__file__), "lib")
    names = ["libc10.so", "libtorch_cpu.so", "libtorch.so", "libc10_cuda.so", "libtorch_cuda.so"]
    handles = [ctypes.CDLL(os.path.join(lib, n), mode=ctypes.RTLD_GLOBAL) for n in names if os.path.exists(os.path.join(lib, n))]
    for system in ["libstdc++.so.6", "libgcc_s.so.1", "libm.so.6", "libc.so.6"]:
        handles.append(ctypes.CDLL(system, mode=ctypes.RTLD_GLOBAL))

    def exported(sym):
        for h in handles:
            try:
                getattr(h, sym)
                return True
            except AttributeError:
                pass
        return False

    missing = [s for s in imports if not exported(s)]
    print(f"{lib}: {len(imports)} imports of libLibTorchSharp.so checked, {len(missing)} missing")
    if missing:
        demangled = missing
        if shutil.which("c++filt"):
            demangled = subprocess.run(["c++filt"], input="\n".join(missing), capture_output=True, text=True).stdout.splitlines()
        for raw, nice in zip(missing, demangled):
            print(f"  {nice}" + (f"    [{raw}]" if nice != raw else ""))
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
