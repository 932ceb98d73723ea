"""The kernel measurement that would confirm the GPU compute model's one layer-shape constant (docs/planning.md,
"Megatron-LM on A100").

`plan` runs every GEMM at the GPU's best-shape rate (MAMF, Bekman's mamf-finder: best shape over a sweep) x the share of
MAMF published benchmarks measure at layer shapes (GpuSpec.LayerShapeGemmShare: A100 0.887, H100 0.968, each from two
published PyTorch/cuBLAS benchmarks, none at the published rows' own shapes) x tile/wave quantisation x a K ramp. This script times
the rows' own shapes: for every published row in src/Supercluster/Planning/PublishedRuns.cs (ROWS below mirrors it; a
test checks that), it times each linear layer's three GEMMs as autograd runs them (forward x@W^T, dgrad dY@W, wgrad
dY^T@x) with torch.matmul at the row's precision and per-GPU shape (tokens = micro-batch x seq / CP, widths / TP), after
a sustained warm-up (as mamf-finder: a cold GPU clocks higher), and prints

  * per shape: median TFLOP/s, its ratio to --mamf, and the planner's rate for that shape (MAMF x --layer-share x wave
    quantisation x K ramp, as ComputeModel.GemmSeconds forms it),
  * per row: the same for its layer GEMMs together (total FLOPs / total seconds),
  * last line: planner seconds / measured seconds over all the GPU's rows' layer GEMMs. Near 1.0 confirms the catalogue;
    otherwise --layer-share x this factor is the share to put in GpuCatalog, with this output as its source. It is a
    ratio to the planner's own shape model, so wave quantisation is not counted twice.

Run on one GPU of the kind the rows used (A100 80GB SXM for the Megatron-LM/Korthikanti/MT-NLG/BLOOM rows, H100 SXM for
Llama 3), nothing else running on it:
  python3 bench/gemm-shapes.py --gpu A100 --mamf 267.9 --out gemm-shapes-a100.csv      # ~5 min on an A100
  python3 bench/gemm-shapes.py --gpu H100 --mamf 792.1 --out gemm-shapes-h100.csv
Smoke test without a GPU (CPU, fp32, every dimension / 32, one iteration; checks the script, not the numbers):
  python3 bench/gemm-shapes.py --smoke
"""
import argparse
import csv
import statistics
import sys
import time

import torch

# name | gpu | precision | hidden | heads | kv heads | ffn | gated | vocab | TP | CP | micro-batch | seq
# One line per published row (PublishedRuns.All); tests/Supercluster.Tests/Planning/GemmShapeBenchTests.cs compares them.
ROWS = """
Megatron-LM 1.7B                                  | A100 | fp16 |  2304 |  24 |  24 |  9216 | 0 |  51200 | 1 |  1 | 16 |   2048
Megatron-LM 3.6B                                  | A100 | fp16 |  3072 |  32 |  32 | 12288 | 0 |  51200 | 2 |  1 | 16 |   2048
Megatron-LM 7.5B                                  | A100 | fp16 |  4096 |  32 |  32 | 16384 | 0 |  51200 | 4 |  1 | 16 |   2048
Megatron-LM 18.4B                                 | A100 | fp16 |  6144 |  48 |  48 | 24576 | 0 |  51200 | 8 |  1 |  8 |   2048
Megatron-LM 39.1B                                 | A100 | fp16 |  8192 |  64 |  64 | 32768 | 0 |  51200 | 8 |  1 |  4 |   2048
Megatron-LM 76.1B                                 | A100 | fp16 | 10240 |  80 |  80 | 40960 | 0 |  51200 | 8 |  1 |  2 |   2048
Megatron-LM 145.6B                                | A100 | fp16 | 12288 |  96 |  96 | 49152 | 0 |  51200 | 8 |  1 |  2 |   2048
Megatron-LM 310.1B                                | A100 | fp16 | 16384 | 128 | 128 | 65536 | 0 |  51200 | 8 |  1 |  1 |   2048
Megatron-LM 529.6B                                | A100 | fp16 | 20480 | 128 | 128 | 81920 | 0 |  51200 | 8 |  1 |  1 |   2048
Megatron-LM 1008.0B                               | A100 | fp16 | 25600 | 160 | 160 |102400 | 0 |  51200 | 8 |  1 |  1 |   2048
Megatron-LM 174.6B on 384 GPUs                    | A100 | fp16 | 12288 |  96 |  96 | 49152 | 0 |  51200 | 8 |  1 |  1 |   2048
Megatron-LM 529.6B on 560 GPUs                    | A100 | fp16 | 20480 | 128 | 128 | 81920 | 0 |  51200 | 8 |  1 |  1 |   2048
Korthikanti 22B                                   | A100 | bf16 |  6144 |  64 |  64 | 24576 | 0 |  51200 | 8 |  1 |  1 |   2048
Korthikanti 175B                                  | A100 | bf16 | 12288 |  96 |  96 | 49152 | 0 |  51200 | 8 |  1 |  1 |   2048
Korthikanti 530B                                  | A100 | bf16 | 20480 | 128 | 128 | 81920 | 0 |  51200 | 8 |  1 |  1 |   2048
Korthikanti 1T                                    | A100 | bf16 | 25600 | 160 | 160 |102400 | 0 |  51200 | 8 |  1 |  1 |   2048
MT-NLG 530B                                       | A100 | bf16 | 20480 | 128 | 128 | 81920 | 0 |  51200 | 8 |  1 |  1 |   2048
BLOOM 176B                                        | A100 | bf16 | 14336 | 112 | 112 | 57344 | 0 | 250880 | 4 |  1 |  2 |   2048
Llama 3 405B 8K GPUs                              | H100 | bf16 | 16384 | 128 |   8 | 53248 | 1 | 128256 | 8 |  1 |  1 |   8192
Llama 3 405B 16K GPUs, 128K context               | H100 | bf16 | 16384 | 128 |   8 | 53248 | 1 | 128256 | 8 | 16 |  1 | 131072
Nemotron-4 340B                                   | H100 | bf16 | 18432 |  96 |   8 | 73728 | 0 | 256000 | 8 |  1 |  1 |   4096
DGXC GPT-3 175B                                   | H100 | bf16 | 12288 |  96 |  96 | 49152 | 0 |  50688 | 4 |  1 |  1 |   2048
DGXC Nemotron-4 15B                               | H100 | bf16 |  6144 |  48 |   8 | 24576 | 0 | 256000 | 4 |  1 |  4 |   4096
DGXC Llama 3.1 8B                                 | H100 | bf16 |  4096 |  32 |   8 | 14336 | 1 | 128256 | 1 |  2 |  1 |   8192
DGXC Llama 3.1 70B                                | H100 | bf16 |  8192 |  64 |   8 | 28672 | 1 | 128256 | 4 |  2 |  1 |   8192
DGXC Llama 3.1 405B                               | H100 | bf16 | 16384 | 128 |   8 | 53248 | 1 | 128256 | 8 |  2 |  1 |   8192
"""
# Rows not listed share a listed row's per-GPU shapes: Table 2's further GPU counts and the README's GPT-3 example (1024
# GPUs), Korthikanti's 2240-GPU rows, MT-NLG's other node counts, Llama 3 16K GPUs at 8K context, Nemotron-4's GPU counts and
# DGXC 340B, each DGXC recipe's second GPU count.


def parse_rows():
    rows = []
    for line in ROWS.strip().splitlines():
        f = [x.strip() for x in line.split("|")]
        rows.append(dict(name=f[0], gpu=f[1], precision=f[2], hidden=int(f[3]), heads=int(f[4]), kv_heads=int(f[5]),
                         ffn=int(f[6]), gated=f[7] == "1", vocab=int(f[8]), tp=int(f[9]), cp=int(f[10]),
                         micro_batch=int(f[11]), seq=int(f[12])))
    return rows


def layer_gemms(r):
    """(label, M, N, K) of one layer's GEMMs on one GPU, as ComputeModel.Layer forms them: QKV, attention output,
    MLP up (x2 when gated) and down, then the output layer (last stage only); each as forward, dgrad and wgrad."""
    T = r["micro_batch"] * r["seq"] // r["cp"]
    h, t = r["hidden"], r["tp"]
    d = h // r["heads"]
    kv_local = max(r["kv_heads"] * d // t, d)
    linears = [("qkv", h, h // t + 2 * kv_local),
               ("proj", h // t, h),
               ("fc1", h, (2 if r["gated"] else 1) * r["ffn"] // t),
               ("fc2", r["ffn"] // t, h),
               ("logits", h, r["vocab"] // t)]
    out = []
    for name, k, n in linears:
        out += [(f"{name} fwd", T, n, k), (f"{name} dgrad", T, k, n), (f"{name} wgrad", n, k, T)]
    return out


# Mirror of ComputeModel.GemmSeconds's compute term (CTA tiles, waves over the SMs, K ramp against the benchmark's K).
# Hand check: A100 (108 SMs), 3456 x 4096 x 8192 -> 128x128 tiles, 27 x 32 = 864 = 8 full waves: 1.0, ramp 1 (K > 2048);
# 8192 x 4096 x 4096 -> 64 x 32 = 2048 tiles of 128x128 = 18.96 -> 19 waves: 0.998.
TILES = [(256, 128), (128, 256), (128, 128), (128, 64), (64, 128), (64, 64)]
K_RAMP, K_BENCHMARK = 64.0, 2048.0


def planner_tflops(mamf, sms, m, n, k, share=1.0):
    wave = max(m * n / (-(-(-(-m // tm) * -(-n // tn)) // sms) * sms * tm * tn) for tm, tn in TILES)
    ramp = min(1.0, k / (k + K_RAMP) * (K_BENCHMARK + K_RAMP) / K_BENCHMARK)
    return mamf * share * wave * ramp


def time_gemm(m, n, k, kind, dtype, device, iters, warmup):
    """Median and mean seconds of one (m x k)(k x n) product with autograd's operand layouts for nn.Linear
    (W stored out x in): forward x @ W^T (B transposed), dgrad dY @ W (both row-major), wgrad dY^T @ x (A transposed)."""
    a = torch.randn(k, m, dtype=dtype, device=device).t() if kind == "wgrad" else torch.randn(m, k, dtype=dtype, device=device)
    b = torch.randn(n, k, dtype=dtype, device=device).t() if kind == "fwd" else torch.randn(k, n, dtype=dtype, device=device)
    c = torch.empty(m, n, dtype=dtype, device=device)
    for _ in range(warmup):
        torch.matmul(a, b, out=c)
    times = []
    if device == "cuda":
        for _ in range(iters):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            torch.matmul(a, b, out=c)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
    else:
        for _ in range(iters):
            t0 = time.perf_counter()
            torch.matmul(a, b, out=c)
            times.append(time.perf_counter() - t0)
    del a, b, c
    return statistics.median(times), statistics.mean(times)


def sustained_warmup(dtype, device, seconds):
    """Run a large GEMM for `seconds` so clocks and power settle before anything is timed (as mamf-finder does)."""
    if seconds <= 0:
        return
    a = torch.randn(8192, 8192, dtype=dtype, device=device)
    end = time.time() + seconds
    while time.time() < end:
        for _ in range(10):
            torch.matmul(a, a)
        if device == "cuda":
            torch.cuda.synchronize()
    del a


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpu", default="A100", help="which published rows to run: A100 or H100 (default A100)")
    ap.add_argument("--mamf", type=float, default=267.9, help="the GPU's catalogued MAMF in TFLOP/s (A100 SXM 267.9, H100 SXM 792.1)")
    ap.add_argument("--layer-share", type=float, default=0,
                    help="GpuCatalog's layer-shape share of MAMF for the planner column (default: A100 0.887, H100 1)")
    ap.add_argument("--sms", type=int, default=0, help="SM count for the planner column (default: the device's; A100 108, H100 132)")
    ap.add_argument("--iters", type=int, default=50, help="timed iterations per shape (default 50)")
    ap.add_argument("--warmup", type=int, default=10, help="untimed iterations per shape (default 10)")
    ap.add_argument("--warmup-seconds", type=float, default=30, help="sustained warm-up before timing (default 30 s)")
    ap.add_argument("--out", help="also write every shape's figures to this CSV file")
    ap.add_argument("--smoke", action="store_true", help="CPU, fp32, dimensions / 32, one iteration: checks the script only")
    args = ap.parse_args()

    if args.gpu not in ("A100", "H100"):
        print(f"gemm-shapes: --gpu {args.gpu}: expected A100 or H100", file=sys.stderr)
        sys.exit(2)
    device = "cpu" if args.smoke else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("gemm-shapes: no CUDA device (use --smoke to check the script on a CPU)", file=sys.stderr)
        sys.exit(2)
    scale, iters, warmup = (32, 1, 0) if args.smoke else (1, args.iters, args.warmup)
    dtypes = {"fp16": torch.float16, "bf16": torch.bfloat16}

    sms = args.sms or {"A100": 108, "H100": 132}[args.gpu]
    share = args.layer_share or {"A100": 0.887, "H100": 0.968}[args.gpu]
    if device == "cuda":
        p = torch.cuda.get_device_properties(0)
        sms = args.sms or p.multi_processor_count
        print(f"# {p.name}, {p.multi_processor_count} SMs, torch {torch.__version__}, CUDA {torch.version.cuda}")
    sustained_warmup(torch.float32 if args.smoke else torch.bfloat16, device, 0 if args.smoke else args.warmup_seconds)

    measured = {}
    csv_rows = []
    total_planner = total_seconds = 0.0
    print(f"{'row':<34} {'gemm':<13} {'M':>7} {'N':>7} {'K':>7} {'TFLOP/s':>8} {'/MAMF':>6} {'planner':>8}")
    for r in (r for r in parse_rows() if r["gpu"] == args.gpu):
        dtype = torch.float32 if args.smoke else dtypes[r["precision"]]
        row_flops = row_seconds = row_planner = 0.0
        for label, m, n, k in layer_gemms(r):
            m, n, k = max(1, m // scale), max(1, n // scale), max(1, k // scale)
            kind = label.split()[1]
            key = (m, n, k, kind, dtype)
            if key not in measured:
                measured[key] = time_gemm(m, n, k, kind, dtype, device, iters, warmup)
            median, mean = measured[key]
            flops = 2.0 * m * n * k
            tflops = flops / median / 1e12
            planner = planner_tflops(args.mamf, sms, m, n, k, share)
            print(f"{r['name'][:34]:<34} {label:<13} {m:>7} {n:>7} {k:>7} {tflops:>8.1f} {tflops / args.mamf:>6.3f} {planner:>8.1f}")
            csv_rows.append(dict(row=r["name"], gemm=label, m=m, n=n, k=k, precision=r["precision"], median_s=median,
                                 mean_s=mean, tflops=tflops, ratio_to_mamf=tflops / args.mamf, planner_tflops=planner))
            if not label.startswith("logits"):   # the layer's GEMMs: what every stage repeats
                row_flops += flops
                row_seconds += median
                row_planner += flops / (planner * 1e12)
        rate, planned = row_flops / row_seconds / 1e12, row_flops / row_planner / 1e12
        print(f"{r['name'][:34]:<34} {'layer total':<13} {'':>7} {'':>7} {'':>7} {rate:>8.1f} {rate / args.mamf:>6.3f} {planned:>8.1f}")
        total_planner += row_planner
        total_seconds += row_seconds

    factor = total_planner / total_seconds
    print(f"{args.gpu} planner seconds / measured median seconds over its rows' layer GEMMs = {factor:.3f}"
          f" (1.0 confirms the layer-shape share {share}; else the share becomes {share * factor:.3f})")
    if args.out:
        with open(args.out, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(csv_rows[0].keys()))
            w.writeheader()
            w.writerows(csv_rows)


if __name__ == "__main__":
    main()
