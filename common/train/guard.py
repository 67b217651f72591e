"""Non-finite losses: skip the step (restoring what a skipped forward changed), stop after K in a row."""
from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)


class NonFiniteGuard:
    """Call with each loss: returns False (skip the step) for NaN/Inf; raises after ``limit`` in a row.

    Skipping the optimizer step is not enough for a module whose *forward* updates state in place (the EMA
    codebooks, cluster sizes and k-means ``initted`` flags of a vector quantizer, batch-norm running statistics):
    a NaN batch has already written NaN into those buffers. ``guard.protect(module)`` snapshots the module's
    buffers before each training forward (a forward pre-hook; eval / no-grad forwards are left alone) and puts
    them back when the step is skipped, so a skipped step leaves the model exactly as it was.
    """

    def __init__(self, limit: int = 5):
        self.limit, self.in_a_row, self.total = limit, 0, 0
        self._protected: list[dict] = []

    def protect(self, module: torch.nn.Module) -> torch.nn.Module:
        """Restore ``module``'s buffers whenever a step is skipped (call once, on the unwrapped module)."""
        entry = {"module": module, "snapshot": None}

        def snapshot(mod, args):
            if mod.training and torch.is_grad_enabled():
                entry["snapshot"] = {n: b.detach().clone() for n, b in mod.named_buffers()}

        entry["handle"] = module.register_forward_pre_hook(snapshot)
        self._protected.append(entry)
        return module

    @torch.no_grad()
    def _restore(self) -> int:
        n = 0
        for entry in self._protected:
            snap, entry["snapshot"] = entry["snapshot"], None
            if snap is None:
                continue
            for name, buf in entry["module"].named_buffers():
                old = snap.get(name)
                if old is None:
                    continue
                if buf.shape == old.shape and buf.dtype == old.dtype:
                    buf.copy_(old)
                else:                                   # the forward replaced the buffer: put the old one back
                    owner, _, attr = name.rpartition(".")
                    entry["module"].get_submodule(owner).register_buffer(attr, old)
                n += 1
        return n

    def __call__(self, loss: torch.Tensor, step: int) -> bool:
        if torch.isfinite(loss.detach()).all():
            self.in_a_row = 0
            for entry in self._protected:
                entry["snapshot"] = None
            return True
        self.in_a_row += 1
        self.total += 1
        restored = self._restore()
        value = loss.detach().float().item() if loss.numel() == 1 else f"tensor of {loss.numel()}"
        log.warning("step %d: non-finite loss (%s): step skipped (%d in a row)%s", step, value, self.in_a_row,
                    f", {restored} buffers restored" if restored else "")
        if self.in_a_row >= self.limit:
            raise FloatingPointError(f"{self.in_a_row} non-finite losses in a row up to step {step}: stopping; "
                                     "lower the learning rate or check the data (train.max_nonfinite)")
        return False
