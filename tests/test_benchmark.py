"""scripts/benchmark.py end to end on a tiny setting (seconds): every section runs, the JSON has every expected key,
the given cache is left untouched, and a missed target says by how much."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

TINY = ["--dialogs", "2", "--seconds", "4", "--workers", "1",
        "--train-steps", "12", "--log-every", "4",
        "--stage1-set", "window=32", "--stage1-set", "train.batch_size=8", "--stage1-set", "train.warmup_steps=2",
        "--stage2-set", "window=32", "--stage2-set", "model.attn_window=12", "--stage2-set", "train.batch_size=8",
        "--stage2-set", "train.warmup_steps=2",
        "--gen-seconds", "3", "--no-cache-seconds", "2", "--batch", "2", "--memory-minutes", "0.05,0.1",
        "--batch-sizes", "1,2", "--offline-minutes", "0.05,0.1"]

EXPECTED = {
    "preprocess": {"workers=1": ["seconds", "dialog_hours", "dialog_hours_per_minute"]},
    "train_stage1": ["windows_per_s", "frames_per_s", "tokens_per_s", "peak_rss_mb", "peak_device_mb", "params"],
    "train_stage2": ["windows_per_s", "tokens_per_s", "peak_rss_mb", "peak_device_mb", "params"],
    "offline": {**{f"{k}_{b}": ["frames_per_s", "x_realtime", "ms_per_step", "batch"]
                   for k in ("kv_cache", "no_cache") for b in ("b1", "batched")},
                "kv_speedup_b1": None, "kv_speedup_batched": None},
    "streaming": {"cold_start": ["ms_per_step_median", "ms_per_step_p99", "ms_per_step_max"],
                  "features": ["ms_per_step_median", "ms_per_step_p99", "frames_per_s"],
                  "raw_audio": ["ms_per_step_median", "ms_per_step_p99", "frames_per_s"],
                  "latency": ["token_buffer_ms", "feature_lookahead_ms", "tokenizer_lookahead_ms", "algorithmic_ms",
                              "compute_ms", "total_ms"]},
    "batch": ["rows"],
    "memory": ["minutes", "rss_mb", "device_mb", "kv_cache_bytes", "rss_growth_mb", "kv_cache_growth_bytes"],
    "offline_memory": ["rows", "rss_growth_mb"],
}


def _script():
    spec = importlib.util.spec_from_file_location("benchmark_script", ROOT / "scripts" / "benchmark.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _check(node, expected, where):
    if expected is None:
        assert isinstance(node, (int, float)) and node > 0, where
    elif isinstance(expected, list):
        missing = [k for k in expected if k not in node]
        assert not missing, f"{where}: missing {missing}"
    else:
        for k, sub in expected.items():
            assert k in node, f"{where}: missing {k}"
            _check(node[k], sub, f"{where}.{k}")


def test_benchmark_runs_every_section(cache_dir, tmp_path):
    bench = _script()
    before = sorted(p.relative_to(cache_dir) for p in cache_dir.rglob("*"))
    threads = torch.get_num_threads()
    out = tmp_path / "bench.json"
    assert bench.main([*TINY, "--cache", str(cache_dir), "--out", str(out)]) == 0
    assert torch.get_num_threads() == threads
    rep = json.loads(out.read_text())
    assert set(rep["results"]) == set(EXPECTED) == set(bench.SECTIONS) - {"sizes", "quality"}   # only when asked
    for name, expected in EXPECTED.items():
        _check(rep["results"][name], expected, name)
    r = rep["results"]
    assert r["train_stage1"]["steps"] == 12 and r["train_stage2"]["steps"] == 12
    assert r["offline"]["kv_cache_batched"]["batch"] == 2
    assert r["memory"]["minutes"] == [0.05, 0.1] and len(r["memory"]["rss_mb"]) == 2
    assert r["memory"]["kv_cache_growth_bytes"] == 0                       # the KV cache stays in its window
    assert {(b["batch"], b["sequences"]) for b in r["batch"]["rows"]} == {(1, "dialogs"), (2, "dialogs"),
                                                                          (1, "samples"), (2, "samples")}
    assert [m["minutes"] for m in r["offline_memory"]["rows"]] == [0.05, 0.1]
    assert all(m["peak_rss_mb"] > 100 and m["x_realtime"] > 0 for m in r["offline_memory"]["rows"])
    assert r["streaming"]["latency"]["algorithmic_ms"] > 0
    for key in ("machine", "date", "device", "command", "torch", "model"):
        assert key in rep
    assert rep["cuda_graph"] is True                                    # --cuda-graph auto: on for CUDA and the CPU
    names = {t["target"] for t in rep["targets"]}
    assert names == {"streaming, frames/s per dyad", "offline, x real time (batch 1)",
                     "end-to-end streaming latency", "memory growth, streaming", "memory growth, offline WAV -> files"}
    assert all({"value", "limit", "met", "verdict"} <= set(t) for t in rep["targets"])
    # the given cache is read, never written (tokens went to a view of it in the temp directory)
    assert sorted(p.relative_to(cache_dir) for p in cache_dir.rglob("*")) == before


def test_missed_target_says_by_how_much():
    from stage2_gpt.speed import check_targets
    res = {"offline": {"kv_cache_b1": {"x_realtime": 8.0}},
           "streaming": {"features": {"frames_per_s": 60.0, "ms_per_step_p99": 20.0},
                         "latency": {"total_ms": 125.0}}}
    rows = {r["target"]: r for r in check_targets(res, "cpu")}
    assert rows["offline, x real time (batch 1)"]["verdict"].startswith("MISSED by 20%")
    assert rows["end-to-end streaming latency"]["verdict"].startswith("MISSED by 25%")
    assert rows["streaming, frames/s per dyad"]["met"] and "2.00x" in rows["streaming, frames/s per dyad"]["verdict"]
    assert "streaming, ms per step (p99), default size" not in rows                # the tiny size: not judged by it
    default = {r["target"]: r for r in check_targets(res, "cpu", {"layers": 6, "dim": 256})}
    assert default["streaming, ms per step (p99), default size"]["met"]        # 20 ms at most at the default size


def test_quality_section_scores_given_models_through_the_evaluation_path(cache_dir, tmp_path):
    """``--only quality`` writes every method's predictions as files and scores them with evaluate_method: the
    tokenizer's reconstruction must beat the mean motion, and every method has the comparison table's keys."""
    bench = _script()
    out = tmp_path / "bench.json"
    assert bench.main([*TINY, "--cache", str(cache_dir), "--only", "train_stage1,train_stage2,quality",
                       "--split", "test", "--out", str(out)]) == 0
    q = json.loads(out.read_text())["results"]["quality"]
    assert set(q["methods"]) == {"gpt_dyad", "gpt_listener", "tokenizer_reconstruction", "mean"}
    m = {k: v["metrics"] for k, v in q["methods"].items()}
    assert m["tokenizer_reconstruction"]["mse_jaw"] < m["mean"]["mse_jaw"]
    assert m["tokenizer_reconstruction"]["mse_exp"] < m["mean"]["mse_exp"]
    for name in m:
        assert {"fid_exp", "p_fid_exp", "mse_exp", "mse_jaw", "jaw_speech_r"} <= set(m[name]), name
    assert "| gpt_listener |" in q["table"] and "| mean |" in q["table"]
    from stage2_gpt.generate import DYAD_SMOOTH_S, DYAD_TEMPERATURE, SLOW_S, SMOOTH_S   # each mode: sample.py's defaults
    assert q["sampling"]["gpt_dyad"]["slow_s"] == SLOW_S and q["sampling"]["gpt_listener"]["slow_s"] is None
    assert q["sampling"]["gpt_listener"]["smooth_s"] == SMOOTH_S and q["sampling"]["gpt_dyad"]["smooth_s"] == DYAD_SMOOTH_S
    assert q["sampling"]["gpt_dyad"]["temperature"] == DYAD_TEMPERATURE and q["sampling"]["gpt_listener"]["temperature"] == 1
