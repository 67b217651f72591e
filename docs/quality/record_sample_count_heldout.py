"""A record, not a tool (paths are those of the run). Held-out dialogs for checking the sampling defaults chosen on the bench's test split: new dialogs and new persons
(none of the bench corpus' persons), same generators. One extra dialog is the 'train' split (preprocessing's stats)."""
import json, sys
from pathlib import Path
sys.path.insert(0, "/work/main")
from common.data.synthetic import make_corpus
R, B = Path("/work/runs/heldout"), Path("/work/runs/quality5")
def persons(index):
    return {p for d in json.loads(Path(index).read_text()).values() for p in d}
for kind in ("default", "hard"):
    root = R / kind / "data"
    if (root / "splits.json").exists():
        continue
    used = persons(B / kind / "data/dataset_jsons/quality.json")
    if kind == "default":
        idx = make_corpus(root, num_dialogs=17, seconds=60.0, seed=2, index_name="heldout.json", person_base=4000)
    else:
        idx = make_corpus(root, num_dialogs=22, seed=1, index_name="heldout.json", preset="hard", min_seconds=30.0,
                          max_seconds=120.0, speech="tts")
    d = json.loads(idx.read_text())
    keep = [k for k in sorted(d) if not (set(d[k]) & used)][:17]
    print(kind, "dropped for shared persons:", [k for k in sorted(d) if set(d[k]) & used], "kept", len(keep))
    assert len(keep) == 17
    (root / "dataset_jsons" / "quality.json").write_text(json.dumps({k: d[k] for k in keep}) + "\n")
    (root / "splits.json").write_text(json.dumps({k: ("train" if i == 0 else "test") for i, k in enumerate(keep)}, indent=1) + "\n")
