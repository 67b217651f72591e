"""A record, not a tool (paths are those of the run, 2026-12-05; issue 19). Run 15 (post hoc): run 14 with both model
rows from the GPTs retrained with the partner's codes clean in training (`model.partner_token_noise=0`, one's own codes
still at the tiny config's 0.2: the `tns0.2p0` chains of record_token_noise_split.sh, run 13's tokenizers and caches,
sampled by `scripts/sample.py` with its defaults); the speaker-only ablation is run 14's (it sees no partner codes, so
the key leaves its training unchanged); every other row is run 13's. Usage: record_run15.py OUT.md"""
import sys
from pathlib import Path
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT)); sys.path.insert(0, str(ROOT / "scripts")); sys.path.insert(0, str(Path(__file__).parent))
from record_run14 import post_hoc_report                          # noqa: E402  (run 14's rows and scoring)

T = Path("/work/runs/tn3")
post_hoc_report("# Run 15 (post hoc): the partner's codes clean in training (model.partner_token_noise=0)",
                lambda corpus, s: {m: T / corpus / f"seed{s}" / "tns0.2p0" / m for m in ("model_dyad", "model_listener")},
                Path(sys.argv[1]))
