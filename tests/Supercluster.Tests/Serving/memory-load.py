# Memory profile of `serve` (docs/serving.md, "Memory"): N requests from C threads, resident memory sampled from /proc.
# usage: /usr/bin/python3 memory-load.py PORT SERVER_PID REQUESTS CONCURRENCY
import json, sys, threading, time, urllib.request, random, os
port, pid, total, conc = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def rss():
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS"): return int(l.split()[1]) // 1024
    return 0
lock = threading.Lock(); done = [0]; errors = [0]; peak = [rss()]; start_rss = rss(); samples = []
def post(path, body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r: return r.read()
def worker(i):
    rnd = random.Random(i)
    while True:
        with lock:
            if done[0] >= total: return
            done[0] += 1; k = done[0]
        kind = k % 4
        try:
            if kind == 0: post("/v1/completions", {"prompt": "the state of " * rnd.randint(1, 4), "max_tokens": rnd.randint(4, 40), "temperature": 0.8, "n": rnd.randint(1, 4)})
            elif kind == 1: post("/v1/completions", {"prompt": "we the people", "max_tokens": 30, "stream": True})
            elif kind == 2: post("/v1/embeddings", {"input": ["the union " * rnd.randint(1, 6)] * rnd.randint(1, 64)})
            else: post("/v1/chat/completions", {"messages": [{"role": "user", "content": "hello " * rnd.randint(1, 5)}], "max_tokens": 20})
        except Exception as e:
            with lock: errors[0] += 1
def sampler():
    while any(t.is_alive() for t in ts):
        r = rss(); peak[0] = max(peak[0], r); samples.append((done[0], r)); time.sleep(0.5)
t0 = time.time()
ts = [threading.Thread(target=worker, args=(i,)) for i in range(conc)]
for t in ts: t.start()
s = threading.Thread(target=sampler); s.start()
for t in ts: t.join()
s.join()
time.sleep(3)
print(json.dumps({"requests": total, "errors": errors[0], "seconds": round(time.time() - t0, 1), "rss_start_mb": start_rss, "rss_peak_mb": peak[0], "rss_end_mb": rss(),
                  "rss_by_1000": [r for d, r in samples if d % 500 < 20][::2]}))
