# A record, not a tool: a diagnostic of issue 19 (2026-12-03) with the run's absolute paths (docs/STAGE2.md, 'Quality levers').
# run as is: identities hidden (shape * 0); remove "* 0" for the true shapes
import torch, numpy as np
from common.data.datasets import TokenWindows
from stage2_gpt.artifact import load_gpt
b = load_gpt("/work/runs/ctxjaw/default/seed0/stage2/gpt.pt"); m = b.model.eval()
C = m.cfg.audio_context - 1
for split in ("val", "test"):
    ds = TokenWindows("/work/runs/quality3/default/cache", "seed0", 2, split, 96, 96, audio_before=C)
    se, n = 0.0, 0
    with torch.no_grad():
        for k in range(0, len(ds), 8):
            items = [ds[i] for i in range(k, min(k + 8, len(ds)))]
            bt = {key: torch.stack([torch.as_tensor(np.array(it[key])) for it in items]) for key in ("codes", "audio", "states", "prev", "shape", "jaw", "audio_prev")}
            out, _ = m(bt["codes"], bt["audio"], bt["states"], bt["prev"], bt["shape"] * 0, bt["jaw"], bt["audio_prev"])
            d = (out["jaw"] - bt["jaw"]) * m.jaw_std
            se += float((d ** 2).sum()); n += d.numel()
    print(split, "teacher-forced raw jaw MSE", se / n, "windows", len(ds))
