"""Record of docs/BENCHMARKS.md, "Cold start" (2026-12-04): per-push times of the first two streaming sessions of a
fresh process, default-size GPT (untrained) with a demo tokenizer, features pushed one token step at a time.

    python docs/record_cold_start_2026-12-04.py CACHE TOKENIZER MODE
    MODE: default (sessions warm the tokenizer at creation), cold (warm=False), ring (cold, the fixed-shape step),
          tokwarm (cold, after decoding zeros of every window length by hand), warm (cold, after a silent session)
Run once per mode, each in a fresh process (the point is what the first session of a process meets)."""
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common.data.cache import Cache  # noqa: E402
from stage2_gpt.generate import Sampling  # noqa: E402
from stage2_gpt.speed import untrained_generator  # noqa: E402

torch.set_num_threads(1)
cache, tok, mode = Cache(sys.argv[1]), sys.argv[2], sys.argv[3]
gen = untrained_generator("default", tok, cache)
gen.cuda_graph = mode == "ring"
audio = np.array(cache.load(cache.dialogs()[0]["id"]).audio, np.float32)
d = gen.d


def session(steps):
    t0 = time.perf_counter()
    sess = gen.stream(Sampling(seed=0), warm=mode == "default")
    print(f"session created in {time.perf_counter() - t0:.2f} s")
    ts = []
    for k in range(steps):
        t = time.perf_counter()
        sess.push(audio[:, k * d:(k + 1) * d])
        ts.append(time.perf_counter() - t)
    return np.array(ts[5:]) * 1e3


if mode == "tokwarm":
    t = time.perf_counter()
    with torch.no_grad():
        for n in range(1, int(gen.tok.decoder_context) + 1):
            gen.tok.decode_normalized(torch.zeros((2, n, gen.Q), dtype=torch.long))
    print("tokenizer warm-up s", round(time.perf_counter() - t, 2))
if mode == "warm":
    t = time.perf_counter()
    session(gen.cfg.attn_window + 30)
    print("warm-up session s", round(time.perf_counter() - t, 2))
for i in range(2):
    ms = session(150)
    print("session", i, "median %.2f p99 %.2f max %.2f mean steps 5-63 %.2f after %.2f"
          % (np.median(ms), np.percentile(ms, 99), ms.max(), ms[:59].mean(), ms[59:].mean()))
