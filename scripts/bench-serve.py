#!/usr/bin/env python3
"""Throughput/latency of a running `supercluster serve` (loopback only; Python standard library only).

  python3 scripts/bench-serve.py --url http://127.0.0.1:8080 --clients 1,4,16,64 --seconds 15 --max-tokens 64
  python3 scripts/bench-serve.py --clients 1,16 --system-prompt-tokens 200      # shared prefix (prefix caching)

For each client count N: N threads send greedy streaming /v1/completions requests back to back for --seconds;
reports total completion tokens/s, requests, p50/p99 request latency and p50/p99 time to first token (TTFT: request
sent → first text chunk), and the 1-minute load average before and after (the machine is shared: a number measured
under load is not the code's). "single-stream tokens/s" is the N=1 figure (one request at a time, prefill included).
Completion tokens are counted from the server's usage when it streams one, else as the text chunks received (one per
token unless a token ends inside a multi-byte character).

--system-prompt-tokens K puts the same K-character prefix (K tokens with the byte tokenizer; fewer with BPE) before
every prompt, as a shared system prompt would; each prompt still ends differently.
"""
import argparse, json, os, threading, time, urllib.request

PROMPTS = ["The state of the union", "We the people", "Our nation", "The economy", "In this year", "Congress must",
           "Fellow citizens", "The war"]
SYSTEM = ("You are the clerk of the House. Answer in the plain style of the annual messages to Congress, with the "
          "facts first and the recommendations after them, and never more than one paragraph for each subject. ")

def system_prefix(chars):
    s = (SYSTEM * (chars // len(SYSTEM) + 1))[:chars]
    return s

def one(url, prompt, max_tokens):
    body = json.dumps({"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True}).encode()
    req = urllib.request.Request(url + "/v1/completions", body, {"Content-Type": "application/json"})
    t0 = time.perf_counter()
    first, chunks, usage = None, 0, None
    with urllib.request.urlopen(req, timeout=300) as r:
        for raw in r:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]": continue
            ev = json.loads(line[6:])
            if "error" in ev: raise RuntimeError(ev["error"])
            if ev.get("usage"): usage = ev["usage"]["completion_tokens"]
            for c in ev.get("choices", []):
                if c.get("text"):
                    chunks += 1
                    if first is None: first = time.perf_counter() - t0
    total = time.perf_counter() - t0
    return total, first if first is not None else total, usage if usage is not None else chunks

def load():
    return round(os.getloadavg()[0], 2)

def pct(xs, q):
    return round(xs[min(len(xs) - 1, int(q * len(xs)))] * 1000) if xs else float("nan")

def run(url, clients, seconds, max_tokens, prefix):
    lat, ttft, toks, errors = [], [], [0], [0]
    lock = threading.Lock()
    load0 = load()
    stop = time.perf_counter() + seconds
    def worker(c):
        n = 0
        while time.perf_counter() < stop:
            # A distinct ending per request: the shared part is only the system prefix.
            prompt = prefix + PROMPTS[(c * 1000 + n) % len(PROMPTS)] + f" ({c}.{n})"
            try:
                dt, first, k = one(url, prompt, max_tokens)
                with lock:
                    lat.append(dt); ttft.append(first); toks[0] += k
            except Exception as e:
                with lock: errors[0] += 1
            n += 1
    t0 = time.perf_counter()
    ts = [threading.Thread(target=worker, args=(c,)) for c in range(clients)]
    for t in ts: t.start()
    for t in ts: t.join()
    wall = time.perf_counter() - t0
    lat.sort(); ttft.sort()
    return {"clients": clients, "requests": len(lat), "errors": errors[0], "tokens": toks[0], "seconds": round(wall, 1),
            "tokens_per_s": round(toks[0] / wall, 1), "p50_ms": pct(lat, 0.5), "p99_ms": pct(lat, 0.99),
            "ttft_p50_ms": pct(ttft, 0.5), "ttft_p99_ms": pct(ttft, 0.99), "load_before": load0, "load_after": load()}

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--clients", default="1,4,16")
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--system-prompt-tokens", type=int, default=0, help="shared prefix length in characters (0 = none)")
    a = ap.parse_args()
    prefix = system_prefix(a.system_prompt_tokens)
    one(a.url, prefix + PROMPTS[0], 8)  # warm-up
    base = None
    for n in [int(x) for x in a.clients.split(",")]:
        r = run(a.url, n, a.seconds, a.max_tokens, prefix)
        base = base or r["tokens_per_s"]
        r["speedup"] = round(r["tokens_per_s"] / base, 2) if base else None
        print(json.dumps(r), flush=True)
