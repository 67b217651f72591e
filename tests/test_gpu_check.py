"""scripts/gpu_check.py (the prepared GPU check) on tiny sizes on the CPU: the same commands (accelerate launch with
the FSDP configs, bf16, stop and resume, tokens, batched generation, streaming), so the check cannot rot."""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_runs_tiny_on_cpu(cache_dir, tmp_path):
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cache = tmp_path / "cache"
    shutil.copytree(cache_dir, cache)                     # the check writes the tokens into its cache
    threads = torch.get_num_threads()
    rc = mod.main(["--tiny", "--device", "cpu", "--cache", str(cache), "--out", str(tmp_path / "out")])
    torch.set_num_threads(threads)
    rep = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert rc == 0, rep["failed"]
    for stage in (1, 2):
        s = rep["steps"][f"stage{stage}"]
        assert s["mixed_precision"] == "bf16" and s["fsdp"].endswith(f"fsdp_stage{stage}.yaml")
        assert s["first_half_from_step"] == 0 and s["resumed_from_step"] == 3 and s["final_step"] == 6
        assert s["exported"] and s["windows_per_s"] > 0
    g = rep["steps"]["generation"]
    assert {(r["batch"], r["sequences"]) for r in g["batches"]} == {(b, m) for b in (1, 2) for m in ("dialogs", "samples")}
    assert all(r["frames_per_s"] > 0 for r in g["batches"])
    assert g["streaming"]["ms_per_step_p99"] >= g["streaming"]["ms_per_step_median"] > 0
    assert {t["target"] for t in g["targets"]} >= {"end-to-end streaming latency"}
    for key in ("command", "date", "machine", "device", "torch", "seconds"):
        assert key in rep
