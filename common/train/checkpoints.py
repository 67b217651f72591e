"""Training checkpoints: ``accelerator.save_state`` folders, verified by checksums, rotated, resumed.

Why not accelerate's own ``ProjectConfiguration(automatic_checkpoint_naming=True, total_limit=N)``: in
accelerate 1.15 ``save_state`` deletes the oldest folders *before* it writes the new one, counts and sorts every
folder by the number in its name without checking it (a folder such as ``step-best`` breaks it), and
``load_state()`` takes the newest folder whether or not it is complete. A kill or a full disk during a save
could then leave no usable checkpoint, and a truncated newest one would be loaded. This layer keeps accelerate's
``save_state`` / ``load_state`` for the contents and adds what those promises need: a save is written into a
temp folder and renamed when complete, a manifest of checksums is written last, resume takes the newest folder
that verifies, and rotation deletes only after a new good checkpoint exists (docs/RELIABILITY.md).
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

from common.io import write_json
from common.train.artifact import file_sha256

log = logging.getLogger(__name__)


MANIFEST_NAME = "checkpoint.json"
_STEP_DIR = re.compile(r"step-(\d+)")


class CheckpointManager:
    """``out/checkpoints/step-XXXXXXXX/``: accelerate state + ``checkpoint.json`` (step, checksums) written last.

    A folder without a valid manifest (killed mid-save, truncated, corrupted) is never resumed from.
    A save is written into ``.tmp-step-XXXXXXXX/`` and renamed when complete, so an interrupted save (kill, disk
    full) never touches an existing checkpoint. Rotation keeps the newest ``keep_last`` checkpoints that *verify*,
    so a corrupt newest one never causes the deletion of the good ones before it.
    """

    def __init__(self, out_dir: str | Path, keep_last: int = 3):
        self.root = Path(out_dir) / "checkpoints"
        self.keep_last = max(1, keep_last)

    def _dirs(self):
        if not self.root.is_dir():
            return []
        return sorted((p for p in self.root.iterdir() if p.is_dir() and _STEP_DIR.fullmatch(p.name)),
                      key=lambda p: int(p.name.split("-")[1]))

    def verify(self, path: Path) -> tuple[bool, str]:
        m = path / MANIFEST_NAME
        if not m.is_file():
            return False, "no checkpoint.json (the save did not complete)"
        try:
            manifest = json.loads(m.read_text())
            if not isinstance(manifest["step"], int):
                return False, f"checkpoint.json has a non-integer step {manifest['step']!r}"
            for name, info in manifest["files"].items():
                f = path / name
                if not f.is_file():
                    return False, f"{name} is missing"
                if f.stat().st_size != info["size"]:
                    return False, f"{name} has {f.stat().st_size} bytes, expected {info['size']} (truncated?)"
                if file_sha256(f) != info["sha256"]:
                    return False, f"{name} checksum mismatch (corrupted)"
        except (ValueError, KeyError, TypeError, AttributeError, OSError) as e:
            return False, f"unreadable checkpoint.json ({type(e).__name__}: {e})"
        return True, "ok"

    def latest_good(self) -> tuple[Path, int] | None:
        for p in reversed(self._dirs()):
            ok, why = self.verify(p)
            if ok:
                return p, int(json.loads((p / MANIFEST_NAME).read_text())["step"])
            log.warning("checkpoint %s is not usable: %s; trying the previous one", p, why)
        return None

    def save(self, accelerator, step: int, extra: dict | None = None) -> Path:
        path = self.root / f"step-{step:08d}"
        tmp = self.root / f".tmp-step-{step:08d}"
        if accelerator.is_main_process and tmp.exists():
            shutil.rmtree(tmp)
        accelerator.wait_for_everyone()
        try:
            accelerator.save_state(str(tmp))
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                files = {}
                for f in sorted(tmp.rglob("*")):
                    if f.is_file() and f.name != MANIFEST_NAME:
                        files[str(f.relative_to(tmp))] = {"size": f.stat().st_size, "sha256": file_sha256(f)}
                write_json(tmp / MANIFEST_NAME, {"step": step, "files": files, **(extra or {})})
                if path.exists():                   # saving the same step again: replace it only now
                    shutil.rmtree(path)
                os.replace(tmp, path)
        except BaseException as e:
            if accelerator.is_main_process:         # a partial save (disk full, interrupted): free its space
                shutil.rmtree(tmp, ignore_errors=True)
                done = [p for p in self._dirs() if (p / MANIFEST_NAME).is_file()]
                log.error("saving checkpoint step %d failed (%s: %s); the partial save was removed and %s",
                          step, type(e).__name__, str(e).splitlines()[0] if str(e) else "",
                          f"the newest checkpoint is still {done[-1]}" if done else "there is no earlier checkpoint")
            raise
        if accelerator.is_main_process:
            self._rotate(path)
        accelerator.wait_for_everyone()
        return path

    def remove_all(self) -> None:
        """Delete every checkpoint (a run that starts over in this out_dir: resume=false)."""
        if self.root.is_dir():
            shutil.rmtree(self.root)

    def _rotate(self, just_saved: Path | None = None):
        """Keep the newest ``keep_last`` checkpoints that verify; delete older ones and debris."""
        dirs = self._dirs()
        kept = []
        for p in reversed(dirs):
            if len(kept) >= self.keep_last:
                break
            ok, why = (True, "ok") if p == just_saved else self.verify(p)
            if ok:
                kept.append(p)
            else:
                log.warning("checkpoint %s is not usable (%s)", p, why)
        if not kept:
            return
        newest = int(kept[0].name.split("-")[1])
        # older than the newest good one and not kept: beyond keep_last, or unusable (killed, corrupt)
        for p in dirs:
            if p not in kept and int(p.name.split("-")[1]) < newest:
                shutil.rmtree(p, ignore_errors=True)
        for p in self.root.glob(".tmp-step-*"):     # saves killed before their rename
            shutil.rmtree(p, ignore_errors=True)

    def resume(self, accelerator, check=None) -> int:
        """Load the newest good checkpoint into ``accelerator``; returns its step (0 when none).

        ``check(path, manifest)`` runs first and may refuse it (raise): a checkpoint of another run."""
        found = self.latest_good()
        if found is None:
            return 0
        path, step = found
        if check is not None:
            check(path, json.loads((path / MANIFEST_NAME).read_text()))
        accelerator.load_state(str(path))
        log.info("resumed from %s (step %d)", path, step)
        return step
