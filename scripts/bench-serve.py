#!/usr/bin/env python3
"""Throughput/latency of a running `supercluster serve` (loopback only; Python standard library only).

  python3 scripts/bench-serve.py --url http://127.0.0.1:8080 --clients 1,4,16,64 --seconds 15 --max-tokens 64
  python3 scripts/bench-serve.py --clients 1,16 --system-prompt-tokens 200      # shared prefix (prefix caching)

For each client count N: N threads send greedy streaming /v1/completions requests back to back for --seconds;
reports total completion tokens/s, requests, p50/p99 request latency and p50/p99 time to first token (TTFT: request
sent → first text chunk), and the 1-minute load average before and after (the machine is shared: a number measured
under load is not the code's). "single-stream tokens/s" is the N=1 figure (one request at a time, prefill included).
Completion tokens are the server's own count (supercluster_tokens_generated_total on /metrics, before and after the
run): events are not tokens (a token that ends mid-character, or may start a stop string, shows with a later one).

--server-pid PID adds the server's CPU time per generated token (user + system, from /proc), and the part of it spent
on the scheduler (decode) thread, the rest being HTTP/SSE work on other threads: on a shared machine
wall-clock tokens/s swing with other jobs, CPU time per token much less, so 1-vs-16 CPU ms/token is the load-robust
view of what batching saves.

The client's own CPU time is reported too (client_cpu_s, client_cpu_share = CPU seconds per wall second, and ms per
token): it runs on the same machine, and every core it uses is one the server does not get.

--pin SERVER_CPUS:CLIENT_CPUS (e.g. --pin 0:1; needs --server-pid) pins every thread of the server to the first CPU
list and this client to the second (sched_setaffinity, as `taskset`), so the two do not compete for one core: the
"client on another machine" measurement. Without it both float over all cores (the default); report which one ran.
Pinning lasts for the server process's life: restart it to unpin.

At the end: a markdown table of the levels and, when 1 and 16 are among them, the 16/1 ratio of total tokens/s.

--system-prompt-tokens K sends prompts as token ids: the same K tokens first (a shared system prompt) and then a
different ending per request (the ids of the prompt's characters: any tokenizer's vocabulary has ids 32..126).
Run it against `serve --prefix-cache-mb 0` and the default to see what prefix caching does to time to first token.
"""
import argparse, json, os, threading, time, urllib.request

PROMPTS = ["The state of the union", "We the people", "Our nation", "The economy", "In this year", "Congress must",
           "Fellow citizens", "The war"]
SYSTEM = ("You are the clerk of the House. Answer in the plain style of the annual messages to Congress, with the "
          "facts first and the recommendations after them, and never more than one paragraph for each subject. ")

def system_prefix(tokens):
    s = (SYSTEM * (tokens // len(SYSTEM) + 1))[:tokens]
    return [ord(c) for c in s]

def one(url, prompt, max_tokens):
    body = json.dumps({"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True}).encode()
    req = urllib.request.Request(url + "/v1/completions", body, {"Content-Type": "application/json"})
    t0 = time.perf_counter()
    first = None
    with urllib.request.urlopen(req, timeout=300) as r:
        for raw in r:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]": continue
            ev = json.loads(line[6:])
            if "error" in ev: raise RuntimeError(ev["error"])
            if first is None and any(c.get("text") for c in ev.get("choices", [])): first = time.perf_counter() - t0
    total = time.perf_counter() - t0
    return total, first if first is not None else total

def generated(url):
    with urllib.request.urlopen(url + "/metrics", timeout=30) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("supercluster_tokens_generated_total"):
                return float(line.split()[-1])
    raise RuntimeError("no supercluster_tokens_generated_total on /metrics")

def cpu_seconds(pid):
    """user + system CPU seconds of a process so far (Linux /proc), or None without a pid."""
    if not pid: return None
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

def scheduler_seconds(pid):
    """CPU seconds of the server's decode thread (named supercluster-scheduler; Linux shows 15 characters), or None."""
    if not pid: return None
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f: s = f.read()
        except FileNotFoundError: continue
        if s[s.index("(") + 1:s.rindex(")")].startswith("supercluster-sc"):
            fields = s.rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")

def cpus(spec):
    """'0,2-3' -> {0, 2, 3}"""
    out = set()
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out

def pin(server_pid, server_cpus, client_cpus):
    """Every thread of the server onto server_cpus (threads it starts later inherit it), this process onto client_cpus."""
    for tid in os.listdir(f"/proc/{server_pid}/task"):
        try: os.sched_setaffinity(int(tid), server_cpus)
        except ProcessLookupError: pass                       # a thread that ended meanwhile
    os.sched_setaffinity(0, client_cpus)

def client_cpu():
    t = os.times()
    return t.user + t.system

def load():
    return round(os.getloadavg()[0], 2)

def pct(xs, q):
    return round(xs[min(len(xs) - 1, int(q * len(xs)))] * 1000) if xs else float("nan")

def run(url, clients, seconds, max_tokens, prefix, pid=None):
    lat, ttft, errors = [], [], [0]
    lock = threading.Lock()
    load0 = load()
    gen0 = generated(url)
    cpu0 = cpu_seconds(pid)
    sched0 = scheduler_seconds(pid)
    mine0 = client_cpu()
    stop = time.perf_counter() + seconds
    def worker(c):
        n = 0
        while time.perf_counter() < stop:
            # A distinct ending per request: the shared part is only the system prefix.
            text = PROMPTS[(c * 1000 + n) % len(PROMPTS)] + f" ({c}.{n})"
            prompt = prefix + [ord(ch) for ch in text] if prefix else text
            try:
                dt, first = one(url, prompt, max_tokens)
                with lock:
                    lat.append(dt); ttft.append(first)
            except Exception as e:
                with lock: errors[0] += 1
            n += 1
    t0 = time.perf_counter()
    ts = [threading.Thread(target=worker, args=(c,)) for c in range(clients)]
    for t in ts: t.start()
    for t in ts: t.join()
    wall = time.perf_counter() - t0
    toks = int(generated(url) - gen0)
    cpu = cpu_seconds(pid) - cpu0 if pid else None
    sched = scheduler_seconds(pid) - sched0 if pid else None
    mine = client_cpu() - mine0
    lat.sort(); ttft.sort()
    return {"server_cpu_ms_per_token": round(cpu * 1000 / toks, 3) if cpu is not None and toks else None,
            "clients": clients, "requests": len(lat), "errors": errors[0], "tokens": toks, "seconds": round(wall, 1),
            "tokens_per_s": round(toks / wall, 1), "p50_ms": pct(lat, 0.5), "p99_ms": pct(lat, 0.99),
            "ttft_p50_ms": pct(ttft, 0.5), "ttft_p99_ms": pct(ttft, 0.99), "load_before": load0, "load_after": load(),
            "client_cpu_s": round(mine, 2), "client_cpu_share": round(mine / wall, 2),
            "client_cpu_ms_per_token": round(mine * 1000 / toks, 3) if toks else None,
            "server_cpu_share": round(cpu / wall, 2) if cpu is not None else None,
            # The decode thread's share of it; the rest is HTTP, SSE and detokenising on other threads.
            "scheduler_cpu_ms_per_token": round(sched * 1000 / toks, 3) if sched is not None and toks else None}

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--clients", default="1,4,16")
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--server-pid", type=int, default=0, help="the server's process id: also report its CPU ms per generated token (robust to a loaded machine)")
    ap.add_argument("--system-prompt-tokens", type=int, default=0, help="shared prefix of this many tokens before every prompt (0 = none)")
    ap.add_argument("--pin", default="", help="SERVER_CPUS:CLIENT_CPUS, e.g. 0:1: pin the server (--server-pid) and this client to different cores")
    a = ap.parse_args()
    placement = "unpinned (server and client share all %d cores)" % os.cpu_count()
    if a.pin:
        sc, _, cc = a.pin.partition(":")
        if not a.server_pid or not sc or not cc:
            ap.error(f"--pin {a.pin!r}: expected SERVER_CPUS:CLIENT_CPUS (e.g. 0:1) together with --server-pid")
        pin(a.server_pid, cpus(sc), cpus(cc))
        placement = f"pinned: server on CPU {sc}, client on CPU {cc}"
    print(placement, flush=True)
    prefix = system_prefix(a.system_prompt_tokens)
    one(a.url, prefix + [ord(c) for c in PROMPTS[0]] if prefix else PROMPTS[0], 8)  # warm-up
    base = None
    rows = []
    for n in [int(x) for x in a.clients.split(",")]:
        r = run(a.url, n, a.seconds, a.max_tokens, prefix, a.server_pid)
        base = base or r["tokens_per_s"]
        r["speedup"] = round(r["tokens_per_s"] / base, 2) if base else None
        rows.append(r)
        print(json.dumps(r), flush=True)
    # The table for docs/serving.md; "× first" is each level's total tokens/s over the first level's (one client).
    cpu = rows[0]["server_cpu_ms_per_token"] is not None
    print(f"\n{placement}")
    print("| clients | tokens/s (× %d client%s) | TTFT p50 / p99 | latency p50 / p99 |%s client CPU ms/token (cores) | errors | load |"
          % (rows[0]["clients"], "" if rows[0]["clients"] == 1 else "s", " server CPU ms/token (cores) | of it, scheduler thread |" if cpu else ""))
    print("| --- | --- | --- | --- |%s --- | --- | --- |" % (" --- | --- |" if cpu else ""))
    for r in rows:
        c = f" {r['server_cpu_ms_per_token']} ({r['server_cpu_share']}) | {r['scheduler_cpu_ms_per_token']} |" if cpu else ""
        print(f"| {r['clients']} | {r['tokens_per_s']:,.0f} ({r['speedup']}) | {r['ttft_p50_ms']} / {r['ttft_p99_ms']} ms | {r['p50_ms']} / {r['p99_ms']} ms |{c} "
              f"{r['client_cpu_ms_per_token']} ({r['client_cpu_share']}) | {r['errors']} | {r['load_before']}–{r['load_after']} |")
    by = {r["clients"]: r for r in rows}
    if 1 in by and 16 in by and by[1]["tokens_per_s"]:
        print(f"\nratio 16/1 clients: {by[16]['tokens_per_s'] / by[1]['tokens_per_s']:.1f}x total tokens/s (target >= 10x); "
              f"TTFT p99 at 16 clients {by[16]['ttft_p99_ms']} ms", flush=True)
        if cpu and by[16]["server_cpu_ms_per_token"]:
            print(f"server CPU per token 1/16 clients: {by[1]['server_cpu_ms_per_token'] / by[16]['server_cpu_ms_per_token']:.1f}x "
                  "(the tokens/s ratio a machine with a core to spare for the server would show)", flush=True)
