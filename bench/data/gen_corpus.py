#!/usr/bin/env python3
"""Generates a JSONL corpus of social posts with planted exact and near duplicates at known rates.

Each line: {"text": ..., "id": N, "lang": "en"|"de", "likes": K}. Base posts draw words from a Zipf-distributed
vocabulary of 20,000 pseudo-words (lengths 2-10) in sentences ending with terminal punctuation. After a base post, with
probability --exact-rate an exact copy of a random earlier post follows (half upper-cased or with doubled spaces: equal
after normalisation), and with probability --near-rate a near copy: one 1-10% edit in one place (appended words,
a deleted passage, or a replaced passage of half that length). The ids of planted copies go to TRUTH (one per line),
so dedup recall and precision can be measured against `prepare --dedup-report`.

usage: gen_corpus.py OUT.jsonl TRUTH.txt --mb 2000 [--exact-rate 0.05] [--near-rate 0.05] [--seed 1]
"""
import argparse, json, random, bisect

ap = argparse.ArgumentParser()
ap.add_argument("out"); ap.add_argument("truth")
ap.add_argument("--mb", type=float, default=200); ap.add_argument("--exact-rate", type=float, default=0.05)
ap.add_argument("--near-rate", type=float, default=0.05); ap.add_argument("--seed", type=int, default=1)
a = ap.parse_args()
rng = random.Random(a.seed)
letters = "abcdefghijklmnopqrstuvwxyz"
vocab = ["".join(rng.choice(letters) for _ in range(rng.randint(2, 10))) for _ in range(20000)]
weights = [1 / (i + 1) for i in range(len(vocab))]
cum = []
s = 0.0
for w in weights: s += w; cum.append(s)

def words(n):
    return [vocab[bisect.bisect_left(cum, rng.random() * s)] for _ in range(n)]

def post():
    out = []
    for _ in range(rng.randint(3, 20)):
        sent = words(rng.randint(5, 20)); sent[0] = sent[0].capitalize()
        out.append(" ".join(sent) + rng.choice(".!?"))
    return out  # list of sentences

pool, planted, n, size = [], [], 0, 0
limit = a.mb * 1e6
with open(a.out, "w", encoding="utf-8") as f:
    def emit(text):
        global n, size
        line = json.dumps({"text": text, "id": n, "lang": "de" if rng.random() < 0.1 else "en", "likes": rng.randint(0, 500)}, ensure_ascii=False)
        f.write(line + "\n"); size += len(line) + 1; n += 1
    while size < limit:
        p = " ".join(post())
        if len(pool) < 100000: pool.append(p)
        else: pool[rng.randrange(len(pool))] = p
        emit(p)
        u = rng.random()
        if u < a.exact_rate:
            src = rng.choice(pool)
            planted.append(n); emit(src.upper() if rng.random() < 0.5 else src.replace(" ", "  "))
        elif u < a.exact_rate + a.near_rate:
            w = rng.choice(pool).split(" ")
            k = max(1, int(len(w) * rng.uniform(0.01, 0.10)))
            at = rng.randrange(0, max(1, len(w) - k))
            kind = rng.randrange(3)
            if kind == 0: w = w + words(k)
            elif kind == 1: w = w[:at] + w[at + k:]
            else: w = w[:at] + words(max(1, k // 2)) + w[at + max(1, k // 2):]
            planted.append(n); emit(" ".join(w))
with open(a.truth, "w") as t:
    t.write("\n".join(map(str, planted)) + "\n")
print(f"{a.out}: {n} posts, {size / 1e6:.0f} MB, {len(planted)} planted duplicates")
