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
    for step in ("plain", "cuda_graph"):                  # the plain step and the captured one (uncaptured on CPU)
        g = rep["steps"]["generation"][step]
        assert {(r["batch"], r["sequences"]) for r in g["batches"]} == {(b, m) for b in (1, 2) for m in ("dialogs", "samples")}
        assert all(r["frames_per_s"] > 0 for r in g["batches"])
        assert g["streaming"]["ms_per_step_p99"] >= g["streaming"]["ms_per_step_median"] > 0
        assert {t["target"] for t in g["targets"]} >= {"end-to-end streaming latency"}
    agree = rep["steps"]["generation"]["agreement"]         # exact on the CPU (a near tie could differ: float rounding)
    assert agree["steps"] == 60 and agree["equal_steps"] == 60 and agree["first_difference"] is None
    assert set(agree["cases"]) == {"4 samples", "listener", "top-p 0.9", "3 dialogs"}
    assert agree["cases"]["3 dialogs"]["steps"] == 60 + 30 + 20
    assert all(a["equal_steps"] == a["steps"] and a["first_difference"] is None for a in agree["cases"].values())
    for key in ("command", "date", "machine", "device", "torch", "seconds"):
        assert key in rep


def test_gpu_check_generation_only_runs_tiny_on_cpu(cache_dir, tmp_path):
    """``--generation-only``: no accelerate runs; a briefly trained tokenizer, an untrained GPT, the captured step."""
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cache = tmp_path / "cache"
    shutil.copytree(cache_dir, cache)
    threads = torch.get_num_threads()
    rc = mod.main(["--tiny", "--generation-only", "--cuda-graph", "on", "--device", "cpu", "--cache", str(cache),
                   "--out", str(tmp_path / "out")])
    torch.set_num_threads(threads)
    rep = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert rc == 0, rep["failed"]
    assert "stage1" not in rep["steps"] and "stage2" not in rep["steps"] and rep["steps"]["stage1_brief"]["seconds"] > 0
    g = rep["steps"]["generation"]
    assert "plain" not in g and g["agreement"]["cases"]["listener"]["equal_steps"] == 60 and g["model"]["gpt"].endswith("gpt.pt")
    assert all(r["frames_per_s"] > 0 for r in g["cuda_graph"]["batches"])


FSDP2_HELPER = """
import sys, torch
import accelerate, yaml
from accelerate.state import PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
# accelerate never chooses FSDP on CPU: switch its state to FSDP2 with the shipped config's settings, as
# `accelerate launch --config_file configs/accelerate/fsdp_stage2.yaml` does on GPUs (tests/test_stage1.py does
# the same for stage 1), with the run's bf16 as FSDP2's mixed-precision policy
fc = yaml.safe_load(open(sys.argv[1]))["fsdp_config"]
init = accelerate.Accelerator.__init__
def fsdp_init(self, *a, **kw):
    init(self, *a, **kw)
    self.state.fsdp_plugin = FullyShardedDataParallelPlugin(
        fsdp_version=fc["fsdp_version"], auto_wrap_policy=fc["fsdp_auto_wrap_policy"].lower(),
        transformer_cls_names_to_wrap=fc["fsdp_transformer_layer_cls_to_wrap"].split(","),
        state_dict_type=fc["fsdp_state_dict_type"], reshard_after_forward=fc["fsdp_reshard_after_forward"],
        mixed_precision_policy=kw["mixed_precision"])
    self.state.distributed_type = DistributedType.FSDP
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP
accelerate.Accelerator.__init__ = fsdp_init
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor
from stage2_gpt.config import load_stage2_config
from stage2_gpt.train import train
res = train(load_stage2_config(sys.argv[2], sys.argv[4:]))
acc, model = res["accelerator"], res["model"]
assert acc.distributed_type == DistributedType.FSDP and acc.num_processes == 2 and acc.mixed_precision == "bf16"
wrapped = {type(m).__name__ for m in model.modules() if isinstance(m, FSDPModule)}
assert {"FSDPAttention", "FSDPFeedForward", "FSDPDyadGPT"} <= wrapped, wrapped
assert all(isinstance(p, DTensor) for p in model.parameters())
import json
open(f"{sys.argv[3]}{acc.process_index}.json", "w").write(json.dumps([l for _, l in res["history"]]))
"""


def test_stage2_fsdp2_bf16_on_two_cpu_processes(cache_dir, tmp_path):
    """Stage 2 with the GPU config's FSDP2 wrapping (x-transformers' Attention / FeedForward + the root) and bf16
    (FSDP2 mixed precision + autocast), on 2 CPU processes: trains, ranks agree, the exported GPT generates."""
    import os
    import subprocess
    import sys

    import numpy as np

    from conftest import tokenized_copy
    tok = tokenized_copy(cache_dir, tmp_path / "tok", steps=10)
    helper = tmp_path / "fsdp2_helper.py"
    helper.write_text(FSDP2_HELPER)
    env = dict(os.environ, ACCELERATE_USE_CPU="1", WANDB_MODE="disabled", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29571", str(helper),
           str(ROOT / "configs" / "accelerate" / "fsdp_stage2.yaml"), str(ROOT / "configs" / "stage2_gpt.yaml"),
           str(tmp_path / "losses"), f"cache={tok['cache']}", f"tokenizer={tok['tokenizer']}", f"out_dir={out}",
           "window=16", "model.dim=32", "model.depth=2", "model.heads=2", "model.dim_head=16", "model.attn_window=8",
           "model.audio_hidden=16", "model.head_hidden=32", "train.batch_size=2", "train.max_steps=6",
           "train.warmup_steps=1", "train.lr=3.0e-3", "train.val_every=3", "train.save_every=3", "train.log_every=1",
           "train.num_workers=0", "train.tracker=none", "train.progress=false"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    losses, other = (json.loads((tmp_path / f"losses{i}.json").read_text()) for i in (0, 1))
    assert losses == other and len(losses) == 6 and all(np.isfinite(losses)) and losses[-1] < losses[0]
    from common.data.cache import Cache
    from stage2_gpt.generate import Generator
    gen = Generator.load(out / "gpt.pt", tok["tokenizer"])
    c = Cache(tok["cache"])
    res = gen.generate(np.array(c.load(c.dialogs()[0]["id"]).audio)[:, :40])
    assert res.motion.shape == (2, 40, 51) and np.isfinite(res.motion).all()
