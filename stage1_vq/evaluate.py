"""Reconstruction quality of a tokenizer on whole cached dialogs (default: the test split).

    python -m stage1_vq.evaluate --tokenizer OUT/tokenizer.pt --cache CACHE [--split test] [--json out.json]

Prints, per motion group (exp, jaw, neck in 54-dim mode): normalised MSE = MSE / per-dim variance of the ground
truth over the split, averaged over the group's dims; the Pearson correlation of the jaw; and per quantizer the
codebook usage (fraction of codes used at least once on the split) and perplexity (exp of the code entropy).
:class:`ReconAccumulator` is shared with the validation of ``stage1_vq/train.py`` (reducible across ranks).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time

import numpy as np
import torch


class ReconAccumulator:
    """Sufficient statistics for per-dim normalised MSE, per-dim Pearson r and code histograms.

    Everything lives in one float64 vector so that a single ``accelerator.reduce(..., "sum")`` merges ranks.
    """

    def __init__(self, motion_dim: int, num_quantizers: int, codebook_size: int):
        self.D, self.Q, self.K = motion_dim, num_quantizers, codebook_size
        self.stats = torch.zeros(7 * motion_dim + 1, dtype=torch.float64)   # n, sum g, g2, p, p2, gp, err2
        self.codes = torch.zeros(num_quantizers, codebook_size, dtype=torch.float64)

    def update(self, gt: torch.Tensor, pred: torch.Tensor, codes: torch.Tensor | None = None):
        """gt, pred: (..., T, D) in any (but the same) space; codes (..., T', Q)."""
        g = gt.detach().reshape(-1, self.D).double().cpu()
        p = pred.detach().reshape(-1, self.D).double().cpu()
        D = self.D
        s = self.stats
        s[0] += g.shape[0]
        for i, v in enumerate((g, g * g, p, p * p, g * p, (g - p) ** 2)):
            s[1 + i * D:1 + (i + 1) * D] += v.sum(0)
        if codes is not None:
            c = codes.detach().reshape(-1, self.Q).long().cpu()
            for q in range(self.Q):
                valid = c[:, q] >= 0
                self.codes[q] += torch.bincount(c[valid, q], minlength=self.K).double()

    def reduce(self, accelerator) -> "ReconAccumulator":
        """Sum over all ranks (a collective: call it on every rank)."""
        if accelerator is not None and accelerator.num_processes > 1:
            dev = accelerator.device
            self.stats = accelerator.reduce(self.stats.to(dev), "sum").cpu()
            self.codes = accelerator.reduce(self.codes.to(dev), "sum").cpu()
        return self

    def summary(self, groups: dict[str, list[int]]) -> dict:
        D, s = self.D, self.stats
        n = max(float(s[0]), 1.0)
        sg, sg2, sp, sp2, sgp, se2 = (s[1 + i * D:1 + (i + 1) * D] for i in range(6))
        var_g = (sg2 / n - (sg / n) ** 2).clamp_min(1e-12)
        var_p = (sp2 / n - (sp / n) ** 2).clamp_min(1e-12)
        cov = sgp / n - (sg / n) * (sp / n)
        mse = se2 / n
        nmse = mse / var_g
        corr = cov / (var_g.sqrt() * var_p.sqrt())
        out = {"frames": int(s[0]), "nmse_per_dim": nmse.tolist(), "nmse_all": float(nmse.mean())}
        for name, (a, b) in groups.items():
            out[f"nmse_{name}"] = float(nmse[a:b].mean())
            out[f"mse_norm_{name}"] = float(mse[a:b].mean())    # plain MSE in the space given
            out[f"corr_{name}"] = float(corr[a:b].mean())
        usage, ppl = [], []
        for q in range(self.Q):
            h = self.codes[q]
            tot = float(h.sum())
            usage.append(float((h > 0).double().mean()))
            if tot > 0:
                pr = h[h > 0] / tot
                ppl.append(float(torch.exp(-(pr * pr.log()).sum())))
            else:
                ppl.append(0.0)
        out["usage"] = usage
        out["perplexity"] = ppl
        return out


def dead_codes(tokenizer) -> list[int]:
    """Per quantizer, codes whose EMA cluster size is below the dead-code threshold."""
    thr = float(tokenizer.cfg.threshold_ema_dead_code) or 1.0
    return [int((layer._codebook.cluster_size < thr).sum()) for layer in tokenizer.rvq.layers]


@torch.no_grad()
def evaluate_cache(tokenizer, cache, split: str = "test", progress: bool = False) -> dict:
    """Encode + decode every dialog of ``split`` whole (both participants); metrics on raw motion."""
    from common.data.datasets import DialogSequences

    ds = DialogSequences(cache, split, normalize=False)
    acc = ReconAccumulator(tokenizer.motion_dim, tokenizer.num_quantizers, tokenizer.codebook_size)
    t0 = time.perf_counter()
    frames = 0
    it = range(len(ds))
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc=f"evaluate {split}", unit="dialog")
    for i in it:
        motion = torch.tensor(ds[i]["motion"])                     # (2, T, D) raw (copied from the mmap)
        reference = tokenizer.person_reference(motion)             # each person's own mean (used if "person")
        codes = tokenizer.encode(motion, reference)
        recon = tokenizer.decode(codes, reference)
        gt = motion[:, :recon.shape[1]]
        acc.update(gt, recon, codes)
        frames += gt.shape[0] * gt.shape[1]
    dt = time.perf_counter() - t0
    out = acc.summary(tokenizer.groups)
    out.update({"split": split, "dialogs": len(ds), "seconds": dt, "frames_per_s": frames / max(dt, 1e-9),
                "tokens_per_s_of_motion": tokenizer.fps / tokenizer.downsample})
    return out


def format_table(m: dict, about: dict | None = None) -> str:
    """The reconstruction table; ``about``: the tokenizer's ``describe()`` (also inside the ``--json`` file)."""
    lines = []
    if about is not None:
        lines.append(f"tokenizer: {about['motion_dim']}-dim motion at {about['fps']:g} fps, downsample "
                     f"{about['downsample']} ({about['fps'] / about['downsample']:g} tokens/s), "
                     f"{about['num_quantizers']} x {about['codebook_size']} codes, causal={about['causal']}, "
                     f"lookahead {about['lookahead_frames']} frames")
    lines.append(f"split {m.get('split', '?')}: {m.get('dialogs', '?')} dialogs, {m['frames']} frames")
    groups = [k[5:] for k in m if k.startswith("nmse_") and k not in ("nmse_all", "nmse_per_dim")]
    lines.append(f"{'group':<8}{'nMSE':>10}{'Pearson r':>12}")
    for g in groups:
        lines.append(f"{g:<8}{m['nmse_' + g]:>10.5f}{m['corr_' + g]:>12.4f}")
    lines.append(f"{'all':<8}{m['nmse_all']:>10.5f}")
    lines.append(f"{'quantizer':<10}{'usage':>8}{'perplexity':>12}")
    for q, (u, p) in enumerate(zip(m["usage"], m["perplexity"])):
        lines.append(f"{q:<10}{u:>8.1%}{p:>12.1f}")
    worst = int(np.argmax(m["nmse_per_dim"]))
    lines.append(f"worst dim {worst}: nMSE {m['nmse_per_dim'][worst]:.5f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    from common.config import device_arg
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", required=True, help="exported tokenizer file (OUT/tokenizer.pt)")
    ap.add_argument("--cache", required=True, help="preprocessed cache")
    ap.add_argument("--split", default="test", help="split(s), comma-separated (default test)")
    ap.add_argument("--json", help="also write the metrics here")
    ap.add_argument("--device", type=device_arg, default="cpu")
    args = ap.parse_args(argv)
    from common.data.cache import Cache, CacheError
    from common.train.artifact import CheckpointError
    from common.io import write_json

    from . import load_tokenizer
    try:
        tok = load_tokenizer(args.tokenizer, device=args.device)
        cache = Cache(args.cache)
        check_cache(tok, cache)
        m = evaluate_cache(tok, cache, args.split)
        print(format_table(m, tok.describe()))
        if args.json:
            write_json(args.json, {"tokenizer": str(args.tokenizer), "cache": str(args.cache), **tok.describe(), **m})
    except (CheckpointError, CacheError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def check_cache(tok, cache):
    if cache.motion_dim != tok.motion_dim:
        raise ValueError(f"tokenizer expects {tok.motion_dim}-dim motion, cache {cache.root} holds "
                         f"{cache.motion_dim}-dim motion")
    if not math.isclose(cache.fps, tok.fps):
        raise ValueError(f"tokenizer was trained at {tok.fps:g} fps, cache {cache.root} is at {cache.fps:g} fps")


if __name__ == "__main__":
    sys.exit(main())
