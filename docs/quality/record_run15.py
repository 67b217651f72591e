"""A record, not a tool (paths are those of the run, 2026-12-05; issue 19). Run 15 (post hoc): run 14 with both model
rows from the GPTs retrained with the partner's codes clean in training (`model.partner_token_noise=0`, one's own codes
still at the tiny config's 0.2: the `tns0.2p0` chains of record_token_noise_split.sh, run 13's tokenizers and caches,
sampled by `scripts/sample.py` with its defaults); the speaker-only ablation is run 14's (it sees no partner codes, so
the key leaves its training unchanged); every other row is run 13's. Usage: record_run15.py OUT.md"""
import sys
from pathlib import Path
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT)); sys.path.insert(0, str(ROOT / "scripts"))
import quality as Q                                               # noqa: E402

B, T, SPK = Path("/work/runs/quality10"), Path("/work/runs/tn3"), Path("/work/runs/run14")
ROWS = ("mean", "random_other", "mirror", "nn_audio", "dualtalk_class", "dualtalk_class_causal")
md = ["# Run 15 (post hoc): the partner's codes clean in training (model.partner_token_noise=0)", ""]
for corpus in ("default", "hard"):
    methods = {}
    for s in (0, 1, 2):
        P, V = B / corpus / f"seed{s}" / "predictions", T / corpus / f"seed{s}" / "tns0.2p0"
        methods[s] = {"model_dyad": V / "model_dyad", "model_listener": V / "model_listener"}
        methods[s] |= {m: P / m for m in ROWS}
        methods[s]["speaker_only"] = SPK / corpus / f"seed{s}" / "speaker_only"
        methods[s][Q.BOUND] = B / corpus / Q.BOUND
    res = Q.score(B / corpus / "cache", methods)
    lines, _ = Q.corpus_report(corpus, res, [], 1000)
    md += lines
Path(sys.argv[1]).write_text("\n".join(md) + "\n")
print("\n".join(md))
