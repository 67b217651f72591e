"""Shared fixtures: one small synthetic corpus and its cache, built once per test session."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from common.data.config import DataConfig  # noqa: E402

CORPUS_DIALOGS = 8
CORPUS_SECONDS = 12.0
ROOT = Path(__file__).resolve().parent.parent
LAUNCHER_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "ACCELERATE_USE_CPU", "KILL_AT")


def subprocess_env(**extra) -> dict:
    """The environment of a command a test runs: this one, wandb off, one thread, the repository importable, and no
    launcher variable (torchrun's, accelerate's, the kill-resume hook's) leaking in unless ``extra`` sets it."""
    env = dict(os.environ)
    env.update({"WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT),
                **extra})
    for k in LAUNCHER_VARS:
        if k not in extra:
            env.pop(k, None)
    return env


@pytest.fixture(scope="session")
def corpus_root(tmp_path_factory) -> Path:
    """Data root of a synthetic corpus (8 dialogs x 12 s), index at dataset_jsons/synthetic.json."""
    from common.data.synthetic import make_corpus
    root = tmp_path_factory.mktemp("corpus")
    make_corpus(root, num_dialogs=CORPUS_DIALOGS, seconds=CORPUS_SECONDS, seed=0)
    return root


@pytest.fixture(scope="session")
def data_cfg(corpus_root) -> DataConfig:
    return DataConfig(data_root=str(corpus_root), index="dataset_jsons/synthetic.json")


@pytest.fixture(scope="session")
def cache_dir(data_cfg, tmp_path_factory) -> Path:
    """The preprocessed cache of ``corpus_root`` (read-only for tests: copy it before changing it)."""
    from common.data.preprocess import preprocess
    out = tmp_path_factory.mktemp("cache")
    preprocess(data_cfg, out, workers=1, progress=False)
    return out


@pytest.fixture(scope="session")
def small_corpus_root(tmp_path_factory) -> Path:
    """A 3-dialog x 4 s corpus, cheap to copy and break."""
    from common.data.synthetic import make_corpus
    root = tmp_path_factory.mktemp("small_corpus")
    make_corpus(root, num_dialogs=3, seconds=4.0, seed=1)
    return root


@pytest.fixture
def broken_corpus(small_corpus_root, tmp_path) -> Path:
    """A private copy of the small corpus that a test may damage."""
    dst = tmp_path / "corpus"
    shutil.copytree(small_corpus_root, dst)
    return dst


def tokenized_copy(cache_dir: Path, root: Path, steps: int) -> dict:
    """Train the tiny stage-1 tokenizer for ``steps`` steps on ``cache_dir`` and tokenize a private copy of the
    cache with it (stage-2 tests build on this): {"cache": copy, "tokenizer": tokenizer.pt}."""
    from stage1_vq import load_stage1_config
    from stage1_vq.tokens import tokenize_cache
    from stage1_vq.train import train as train_stage1
    cache = root / "cache"
    shutil.copytree(cache_dir, cache)
    config = Path(__file__).resolve().parents[1] / "configs" / "stage1_vq_tiny.yaml"
    cfg = load_stage1_config(config, [f"cache={cache}", f"out_dir={root / 's1'}", f"train.max_steps={steps}",
                                      "train.val_every=0", f"train.save_every={steps}", "train.progress=false"])
    tok = Path(train_stage1(cfg)["artifact"])
    tokenize_cache(tok, cache, progress=False)
    return {"cache": cache, "tokenizer": tok}
