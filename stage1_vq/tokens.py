"""Tokenize every cached dialog (all splits) with an exported tokenizer, for stage 2; find those tokens again.

    python -m stage1_vq.tokens --tokenizer OUT/tokenizer.pt --cache CACHE [--name NAME] [--overwrite]

Writes ``CACHE/tokens/<name>/<dialog>.npy`` ((2, T // downsample, Q) int32, participant order of the manifest)
and ``CACHE/tokens/<name>/tokens.json`` (tokenizer path and checksum, downsample, Q, codebook size, fps,
lookahead, dialogs). Every file is written atomically; ``tokens.json`` last, so a folder with it is complete.
Re-running skips dialogs whose file exists and whose tokenizer checksum matches (``--overwrite`` redoes all).
``name`` defaults to the tokenizer file's stem plus its parent folder (e.g. ``stage1_tiny-tokenizer``).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger("stage1_vq.tokens")


def default_name(tokenizer: str | Path) -> str:
    p = Path(tokenizer).resolve()
    name = f"{p.parent.name}-{p.stem}" if p.parent.name else p.stem
    return name.lstrip(".") or "tokens"          # a run folder such as .runs/ must not make a hidden name


@torch.no_grad()
def tokenize_cache(tokenizer: str | Path, cache_root: str | Path, name: str | None = None, device: str = "cpu",
                   overwrite: bool = False, progress: bool = True) -> Path:
    """Tokenize all dialogs of the cache; returns the ``tokens/<name>`` folder."""
    from common.data.cache import Cache
    from common.train.artifact import file_sha256
    from common.io import check_name, save_npy, write_json

    from . import load_tokenizer
    from .evaluate import check_cache

    cache = Cache(cache_root)
    tok = load_tokenizer(tokenizer, device=device)
    check_cache(tok, cache)
    name = check_name(name or default_name(tokenizer), "tokens name")
    out = cache.root / "tokens" / name
    sha = file_sha256(tokenizer)
    info_path = out / "tokens.json"
    if info_path.is_file() and not overwrite:
        old = read_info(info_path)
        if old.get("tokenizer_sha256") != sha:
            raise ValueError(f"{out} holds tokens of another tokenizer ({old.get('tokenizer')}); "
                             "pass --overwrite or another --name")
        if recorded_reference(old) != tok.reference:
            log.warning("%s holds codes made around the %s reference, but %s codes around the %s one (a reader "
                        "before 0ba08ee read older tokenizers wrongly): tokenizing again", out,
                        recorded_reference(old), tokenizer, tok.reference)
            overwrite = True
    elif out.is_dir() and not overwrite:
        # an interrupted run: files without tokens.json may come from another tokenizer; redo them
        overwrite = True
    dialogs = cache.dialogs()
    it = dialogs
    if progress:
        from tqdm import tqdm
        it = tqdm(dialogs, desc=f"tokenize {name}", unit="dialog")
    for d in it:
        path = out / f"{d['id']}.npy"
        if path.is_file() and not overwrite:
            continue
        motion = torch.from_numpy(np.array(cache.load(d["id"]).motion, dtype=np.float32))   # (2, T, D)
        codes = tok.encode(motion, tok.person_reference(motion)).cpu().numpy().astype(np.int32)   # (2, T//d, Q)
        save_npy(path, codes)
    write_json(info_path, {
        "tokenizer": str(Path(tokenizer).resolve()), "tokenizer_sha256": sha, "name": name,
        "downsample": tok.downsample, "num_quantizers": tok.num_quantizers, "codebook_size": tok.codebook_size,
        "fps": tok.fps, "token_rate": tok.fps / tok.downsample, "motion_dim": tok.motion_dim,
        "lookahead_frames": tok.lookahead_frames, "decoder_context": tok.decoder_context, "causal": tok.causal,
        "reference": tok.reference + (" (each participant's mean over the dialog)" if tok.reference == "person" else ""),
        "dtype": "int32", "shape": "(2, num_frames // downsample, num_quantizers)",
        "dialogs": {d["id"]: d["num_frames"] // tok.downsample for d in dialogs},
    })
    return out


def recorded_reference(info: dict) -> str:
    """The reference a tokens folder's codes were made around (``global`` before tokens.json recorded it)."""
    return str(info.get("reference", "global")).split(" ")[0]


def read_info(path: Path) -> dict:
    """A tokens folder's tokens.json, or CacheError naming it and the fix."""
    from common.data.cache import CacheError
    from common.io import read_json
    try:
        info = read_json(path)
    except (OSError, ValueError, RecursionError) as e:
        raise CacheError(f"{path} is unreadable ({type(e).__name__}: {str(e)[:200]}): rerun "
                         "`python -m stage1_vq.tokens ... --overwrite` for this cache") from e
    if not isinstance(info, dict):
        raise CacheError(f"{path} is not a tokens description (a JSON object): rerun `python -m stage1_vq.tokens "
                         "... --overwrite` for this cache")
    return info


def find_tokens(cache, tokenizer_path: str | Path, name: str = "") -> tuple[str, dict]:
    """The tokens folder of ``tokenizer_path`` in ``cache`` (by ``name``, or the one whose checksum matches):
    ``(name, tokens.json)``."""
    from common.io import check_name
    from common.train.artifact import file_sha256

    if name:
        check_name(name, "tokens name")
    root = cache.root / "tokens"
    sha = file_sha256(tokenizer_path)
    candidates = [root / name] if name else sorted(p for p in root.glob("*") if p.is_dir()) if root.is_dir() else []
    for folder in candidates:
        info_path = folder / "tokens.json"
        if not info_path.is_file():
            continue
        info = read_info(info_path)
        if info.get("tokenizer_sha256") == sha:
            if isinstance(info.get("downsample"), bool) or not isinstance(info.get("downsample"), int):
                from common.data.cache import CacheError
                raise CacheError(f"{info_path} has no integer downsample: rerun `python -m stage1_vq.tokens "
                                 "... --overwrite` for this cache")
            from . import tokenizer_config
            reference = tokenizer_config(tokenizer_path).reference        # not built: torch's RNG untouched
            if recorded_reference(info) != reference:
                from common.data.cache import CacheError
                raise CacheError(f"{info_path}: its codes were made around the {recorded_reference(info)} reference, "
                                 f"but {tokenizer_path} codes around the {reference} one (a reader before 0ba08ee "
                                 "read older tokenizers wrongly): rerun `python -m stage1_vq.tokens ... --overwrite`")
            return folder.name, info
        if name:
            raise ValueError(f"{folder} holds tokens of another tokenizer ({info.get('tokenizer')}), not of "
                             f"{tokenizer_path}: re-tokenize or set tokens=")
    raise FileNotFoundError(f"no complete tokens folder of {tokenizer_path} in {root}: run "
                            f"`python -m stage1_vq.tokens --tokenizer {tokenizer_path} --cache {cache.root}` first")


def main(argv=None) -> int:
    from common.config import device_arg
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", required=True, help="exported tokenizer file (OUT/tokenizer.pt)")
    ap.add_argument("--cache", required=True)
    ap.add_argument("--name", help="tokens/<name> folder (default: <run folder>-<file stem>)")
    ap.add_argument("--device", type=device_arg, default="cpu")
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    from common.data.cache import CacheError
    from common.train.artifact import CheckpointError
    try:
        out = tokenize_cache(args.tokenizer, args.cache, args.name, args.device, args.overwrite, progress=not args.quiet)
    except (CheckpointError, CacheError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"tokens written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
