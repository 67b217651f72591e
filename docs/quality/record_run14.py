"""A record, not a tool (paths are those of the run, 2026-12-05; issue 19). Run 14 (post hoc): run 13's bench
(`/work/runs/quality10`) with the dyad rows as `scripts/sample.py` now writes them (temperature 1.35, output low-pass
20 ms: the `t1.35_sm0.02` files of record_dyad_temperature_score.py, equal to sample.py's output) and the speaker-only
ablation resampled with the same defaults (`scripts/sample.py --mode dyad`, into /work/runs/run14); every other row
is run 13's. Scored and reported like scripts/quality.py. Usage: record_run14.py OUT.md"""
import sys
from pathlib import Path
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT)); sys.path.insert(0, str(ROOT / "scripts"))
import quality as Q                                               # noqa: E402

B, MIX, SPK = Path("/work/runs/quality10"), Path("/work/runs/mixT"), Path("/work/runs/run14")
ROWS = ("model_listener", "mean", "random_other", "mirror", "nn_audio", "dualtalk_class", "dualtalk_class_causal")


def post_hoc_report(title: str, model_rows, out: Path) -> None:
    """Score run 13's bench with ``model_rows(corpus, seed)`` (``{row: folder}``) in place of its model rows, the
    speaker-only ablation resampled here (SPK), every other row run 13's; write the report to ``out``."""
    md = [title, ""]
    for corpus in ("default", "hard"):
        methods = {}
        for s in (0, 1, 2):
            P = B / corpus / f"seed{s}" / "predictions"
            methods[s] = dict(model_rows(corpus, s))
            methods[s] |= {m: P / m for m in ROWS if m not in methods[s]}
            methods[s]["speaker_only"] = SPK / corpus / f"seed{s}" / "speaker_only"
            methods[s][Q.BOUND] = B / corpus / Q.BOUND
        res = Q.score(B / corpus / "cache", methods)
        lines, _ = Q.corpus_report(corpus, res, [], 1000)
        md += lines
    out.write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    post_hoc_report("# Run 14 (post hoc): dyad mode at temperature 1.35, low-pass 20 ms",
                    lambda corpus, s: {"model_dyad": MIX / corpus / f"seed{s}" / "t1.35_sm0.02"}, Path(sys.argv[1]))
