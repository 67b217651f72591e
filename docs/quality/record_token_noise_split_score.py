"""A record, not a tool (paths are those of the run, 2026-12-05; issue 19). Score the token-noise split
(record_token_noise_split.sh) like the bench, paired against the shipped rows (run 14: dyad mode = the
t1.35_sm0.02 files of record_dyad_temperature_score.py, listener mode = run 13's `model_listener`).
Usage: record_token_noise_split_score.py OUT.md CORPORA SEEDS TAG... (TAG 0.0 | s0p0.2 | s0.2p0 | s0.1p0 ...);
HELDOUT=1: the held-out dialogs of new persons (base listener and the s0.2p0 rows of the held-out chains)."""
import os
import sys
from pathlib import Path
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT)); sys.path.insert(0, str(ROOT / "scripts"))
import quality as Q                                               # noqa: E402
from common.eval import compare as C                              # noqa: E402

B, MIX, T = Path("/work/runs/quality10"), Path("/work/runs/mixT"), Path("/work/runs/tn3")
HO, MIX_HO, T_HO = Path("/work/runs/heldout"), Path("/work/runs/mixT_ho"), Path("/work/runs/tn3_ho")
out_md, corpora, seeds, tags = Path(sys.argv[1]), sys.argv[2].split(","), [int(s) for s in sys.argv[3].split(",")], sys.argv[4:]
heldout = bool(os.environ.get("HELDOUT"))
md = []
for corpus in corpora:
    methods = {}
    for s in seeds:
        if heldout:
            m = {"dyad_tn0.2": MIX_HO / corpus / f"seed{s}" / "t1.35_sm0.02",
                 "listener_tn0.2": T_HO / corpus / f"seed{s}" / "base_listener"}
            for tag in tags:
                for mode in ("dyad", "listener"):
                    m[f"{mode}_tn{tag}"] = T_HO / corpus / f"seed{s}" / f"{tag}_{mode}"
            m["dualtalk_class_causal"] = HO / corpus / f"seed{s}" / "predictions" / "dualtalk_class_causal"
        else:
            P = B / corpus / f"seed{s}" / "predictions"
            m = {"dyad_tn0.2": MIX / corpus / f"seed{s}" / "t1.35_sm0.02", "listener_tn0.2": P / "model_listener"}
            for tag in tags:
                for mode in ("dyad", "listener"):
                    m[f"{mode}_tn{tag}"] = T / corpus / f"seed{s}" / f"tn{tag}" / f"model_{mode}"
            m["dualtalk_class_causal"] = P / "dualtalk_class_causal"
            m[Q.BOUND] = B / corpus / Q.BOUND
        methods[s] = m
    res = Q.score((HO if heldout else B) / corpus / "cache", methods)
    Q.MODEL_MODES = ()
    lines, _ = Q.corpus_report(corpus, res, [], 1000)
    md += lines + ["Paired verdicts:", ""]
    for mode in ("dyad", "listener"):
        md += [C.verdict(f"{mode}_tn{tag}", f"{mode}_tn0.2", res, n_boot=1000) for tag in tags]
        md += [C.verdict(f"{mode}_tn{tag}", "dualtalk_class_causal", res, n_boot=1000) for tag in ["0.2"] + tags]
    md.append("")
out_md.write_text("\n".join(md) + "\n")
print("\n".join(md))
