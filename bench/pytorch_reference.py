#!/usr/bin/env python3
"""The same GPT-2 training step as `supercluster bench`, in plain PyTorch (eager or torch.compile).

Same model (GPT-2: learned positions, pre-LayerNorm, GELU-tanh, tied head, SDPA causal attention), same initial weights
(the safetensors file written by `supercluster bench --save-init`), same tokens (the llm.c shards that `bench --data`
reads, in the same order), same optimizer (AdamW β 0.9/0.95, eps 1e-8, weight decay 0.1 on matrices only, constant lr,
grad-norm clip 1.0), same mixed precision (bf16 autocast for matmuls, fp32 weights and optimizer), TF32 for fp32 matmuls.

    python3 bench/pytorch_reference.py --init INIT.safetensors --data DIR --batch-size 16 --seq-len 1024 --steps 20 [--compile]

Prints one JSON line: tokens_per_s, ms_per_step, first_loss, last_loss, peak_memory_gib (device memory in use, as the
driver reports it: what `supercluster bench` reports too), max_allocated_gib (PyTorch's allocator alone).
"""
import argparse, json, math, os, statistics, struct, time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    dtypes = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "I64": torch.int64}
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        begin, end = meta["data_offsets"]
        t = torch.frombuffer(bytearray(data[begin:end]), dtype=dtypes[meta["dtype"]]) if end > begin else torch.empty(0)
        out[name] = t.reshape(meta["shape"])
    return out


class Attention(nn.Module):
    def __init__(self, d, n_head):
        super().__init__()
        self.n_head = n_head
        self.c_attn = nn.Linear(d, 3 * d)
        self.c_proj = nn.Linear(d, d)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.c_attn(x).split(d, dim=2)
        q, k, v = (z.view(b, t, self.n_head, d // self.n_head).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(b, t, d))


class Mlp(nn.Module):
    def __init__(self, d, ffn):
        super().__init__()
        self.c_fc = nn.Linear(d, ffn)
        self.c_proj = nn.Linear(ffn, d)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, d, n_head, ffn):
        super().__init__()
        self.ln_1, self.attn, self.ln_2, self.mlp = nn.LayerNorm(d), Attention(d, n_head), nn.LayerNorm(d), Mlp(d, ffn)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, vocab, ctx, n_layer, n_head, d, ffn, padded_vocab):
        super().__init__()
        self.vocab = vocab
        # Tables padded to a multiple of 64/128 like Supercluster's (the head's matmul on whole tensor-core tiles);
        # the extra rows are zero and the logits are cut back to the real vocabulary.
        self.wte, self.wpe = nn.Embedding(padded_vocab, d), nn.Embedding(ctx, d)
        self.h = nn.ModuleList(Block(d, n_head, ffn) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d)

    def forward(self, idx):
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for block in self.h:
            x = block(x)
        return F.linear(self.ln_f(x), self.wte.weight)[..., :self.vocab]


def load_model(init_path, config_path):
    cfg = json.load(open(config_path))
    vocab, multiple = cfg["vocab_size"], cfg.get("pad_vocab_multiple", 1)
    model = GPT(vocab, cfg["seq_len"], cfg["n_layer"], cfg["n_head"], cfg["n_embd"], cfg["ffn_hidden"], -(-vocab // multiple) * multiple)
    state = read_safetensors(init_path)
    conv1d = (".c_attn.weight", ".c_proj.weight", ".c_fc.weight")  # stored [in, out] (HF Conv1D); nn.Linear wants [out, in]
    with torch.no_grad():
        for name, p in model.named_parameters():
            src = state[name]
            src = src.t() if name.endswith(conv1d) else src
            if name == "wte.weight":  # stored with the real vocabulary's rows
                p.zero_()
                p[: src.shape[0]].copy_(src)
            else:
                p.copy_(src)
    return model


class Shards:
    """Contiguous windows of B·T+1 tokens from the sorted train shards, as Supercluster's loader reads epoch 0."""

    def __init__(self, data_dir, b, t):
        meta = json.load(open(os.path.join(data_dir, "meta.json")))
        self.files = [os.path.join(data_dir, s["file"]) for s in sorted(meta["train_shards"], key=lambda s: s["file"])]
        self.b, self.t, self.shard, self.pos = b, t, 0, 0
        self._open()

    def _open(self):
        header = np.fromfile(self.files[self.shard], dtype=np.int32, count=256)
        assert header[0] == 20240520, "not an llm.c shard"
        dtype = np.uint16 if header[1] == 1 else np.uint32
        self.tokens = np.memmap(self.files[self.shard], dtype=dtype, mode="r", offset=1024, shape=(int(header[2]),))

    def next(self):
        n = self.b * self.t
        if self.pos + n + 1 > len(self.tokens):
            self.shard = (self.shard + 1) % len(self.files)
            self.pos = 0
            self._open()
        w = torch.from_numpy(self.tokens[self.pos:self.pos + n + 1].astype(np.int64))
        self.pos += n
        return w[:-1].view(self.b, self.t), w[1:].reshape(-1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--init", required=True, help="initial weights from `supercluster bench --save-init` (config.json beside it)")
    ap.add_argument("--data", required=True)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--lr", type=float, default=6e-4)
    ap.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    ap.add_argument("--compile", action="store_true")
    a = ap.parse_args()

    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    dev = "cuda"
    model = load_model(a.init, os.path.join(os.path.dirname(os.path.abspath(a.init)), "config.json")).to(dev)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95), eps=1e-8, fused=True)
    step_fn_model = torch.compile(model) if a.compile else model
    data = Shards(a.data, a.batch_size, a.seq_len)
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if a.dtype == "bf16" else torch.autocast("cuda", enabled=False)

    times, first, last, peak_used = [], None, None, 0
    for s in range(a.warmup + a.steps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        x, y = data.next()
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        with ctx:
            logits = step_fn_model(x)
        loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        value = loss.item()
        torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        free, total = torch.cuda.mem_get_info()  # device memory in use as the driver sees it, as Supercluster reports it
        peak_used = max(peak_used, total - free)
        first = value if first is None else first
        last = value
        if s >= a.warmup:
            times.append(dt)
    ms = statistics.median(times) * 1000
    print(json.dumps({
        "variant": "torch.compile" if a.compile else "eager", "tokens_per_s": a.batch_size * a.seq_len / (ms / 1000),
        "ms_per_step": ms, "first_loss": first, "last_loss": last,
        "peak_memory_gib": peak_used / 2**30, "max_allocated_gib": torch.cuda.max_memory_allocated() / 2**30,
        "ln_vocab": math.log(model.vocab),
    }))


if __name__ == "__main__":
    main()
