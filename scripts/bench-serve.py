#!/usr/bin/env python3
"""Throughput/latency of a running `supercluster serve` (loopback only; Python standard library only).

  python3 scripts/bench-serve.py --url http://127.0.0.1:8080 --clients 1,4,16 --seconds 15 --max-tokens 64

For each client count N: N threads send greedy /v1/completions requests back to back for --seconds;
reports total completion tokens/s, requests, and p50/p99 request latency. "single-stream tokens/s" is the
N=1 figure (one request at a time: decode speed of one sequence, prefill included).
"""
import argparse, json, statistics, threading, time, urllib.request

PROMPTS = ["The state of the union", "We the people", "Our nation", "The economy", "In this year", "Congress must",
           "Fellow citizens", "The war"]

def one(url, i, max_tokens):
    body = json.dumps({"prompt": PROMPTS[i % len(PROMPTS)], "max_tokens": max_tokens, "temperature": 0}).encode()
    req = urllib.request.Request(url + "/v1/completions", body, {"Content-Type": "application/json"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=120) as r:
        out = json.load(r)
    return time.perf_counter() - t0, out["usage"]["completion_tokens"]

def run(url, clients, seconds, max_tokens):
    lat, toks, errors = [], [0], [0]
    lock = threading.Lock()
    stop = time.perf_counter() + seconds
    def worker(c):
        n = 0
        while time.perf_counter() < stop:
            try:
                dt, k = one(url, c * 1000 + n, max_tokens)
                with lock:
                    lat.append(dt); toks[0] += k
            except Exception as e:
                with lock: errors[0] += 1
            n += 1
    t0 = time.perf_counter()
    ts = [threading.Thread(target=worker, args=(c,)) for c in range(clients)]
    for t in ts: t.start()
    for t in ts: t.join()
    wall = time.perf_counter() - t0
    lat.sort()
    p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 if lat else float("nan")
    return {"clients": clients, "requests": len(lat), "errors": errors[0], "tokens": toks[0], "seconds": round(wall, 1),
            "tokens_per_s": round(toks[0] / wall, 1), "p50_ms": round(p(0.5)), "p99_ms": round(p(0.99))}

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--clients", default="1,4,16")
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--max-tokens", type=int, default=64)
    a = ap.parse_args()
    one(a.url, 0, 8)  # warm-up
    for n in [int(x) for x in a.clients.split(",")]:
        print(json.dumps(run(a.url, n, a.seconds, a.max_tokens)), flush=True)
