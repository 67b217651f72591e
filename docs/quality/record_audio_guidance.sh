#!/bin/bash
# A record, not a tool (paths are those of the run): how docs/quality/2026-12-05_audio-guidance.md was measured.
set -e
cd /work/main; PY=.venv/bin/python
# 1. the bench with audio dropout, reusing run 10's tokenizers, regressors and speaker-only GPTs
cp -al /work/runs/quality10 /work/runs/cfg10
for c in default hard; do for s in 0 1 2; do
  rm -rf /work/runs/cfg10/$c/seed$s/stage2 /work/runs/cfg10/$c/seed$s/predictions/model_{dyad,listener}; done; done
rm -f /work/runs/cfg10/QUALITY.md /work/runs/cfg10/quality.json
$PY scripts/quality.py --out /work/runs/cfg10 --set stage2:model.audio_dropout=0.1
# 2. guided samples of the bench's test dialogs (NAME, extra sample.py args, modes), two jobs at a time
sample() {  # RUN CACHE_RUN NAME "ARGS" MODES
  for c in default hard; do for s in 0 1 2; do for mode in $5; do
    out=$2/$c/seed$s/predictions/model_${mode}_$3
    [ -f $out/.done ] || echo "$PY scripts/sample.py --gpt $1/$c/seed$s/stage2/gpt.pt --tokenizer $1/$c/seed$s/stage1/tokenizer.pt --cache $2/$c/cache --split test --mode $mode --out $out --seed $s --quiet --no-plot $4 --threads 1 && touch $out/.done"
  done; done; done | xargs -P 2 -I{} bash -c "{}"; }
R=/work/runs/cfg10; H=/work/runs/heldout
sample $R $R g2.0 "--guidance 2 --smooth-s 0.0145" "dyad listener"
sample $R $R g1.5 "--guidance 1.5 --smooth-s 0.0145" "dyad listener"
sample $R $R g2f1 "--guidance 2 --fine-guidance 1 --smooth-s 0.0145" "dyad"
# 3. the 25 ms low-pass post hoc: undo the 14.5 ms one-pole (y_0 = x_0) exactly, apply 25 ms
$PY - <<'PYEOF'
import numpy as np
from pathlib import Path
from scipy.signal import lfilter
R, fps = Path("/work/runs/cfg10"), 30.0
a0, a1 = np.exp(-1 / (0.0145 * fps)), np.exp(-1 / (0.025 * fps))
for src, dst in (("model_dyad", "model_dyad_s0.025"), ("model_dyad_g2.0", "model_dyad_g2s0.025"),
                 ("model_dyad_g2f1", "model_dyad_g2f1s0.025")):
    for f in sorted(R.glob(f"*/seed*/predictions/{src}/*/*.npz")):
        z = dict(np.load(f, allow_pickle=False))
        y = z["motion"][:, :50].astype(np.float64)
        x = y.copy(); x[1:] = (y[1:] - a0 * y[:-1]) / (1 - a0)
        x = lfilter([1 - a1], [1, -a1], x, axis=0, zi=a1 * x[:1])[0]
        z["motion"] = z["motion"].copy(); z["motion"][:, :50] = x
        e = z["expression_params"].copy(); e[:, 0, :50] = x; z["expression_params"] = e
        out = Path(str(f).replace(f"/{src}/", f"/{dst}/")); out.parent.mkdir(parents=True, exist_ok=True)
        np.savez(out, **z)
PYEOF
# 4. held-out dialogs of new persons (built by record_sample_count_heldout.py), every setting explicit
sample $R $H cfg_g1 "--guidance 1 --smooth-s 0.0145" dyad
sample $R $H cfg_g2 "--guidance 2 --smooth-s 0.025" dyad
sample $R $H cfg_g2f1 "--guidance 2 --fine-guidance 1 --smooth-s 0.025" dyad
# 5. scoring: common.eval.scoring.evaluate_method on each folder (split test), means over seeds and dialogs
