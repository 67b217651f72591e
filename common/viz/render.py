"""Videos of a generated dialog: shaded FLAME heads of both participants (or a coefficient view), a state strip
and both audio tracks, written as an MP4 with imageio-ffmpeg's bundled ffmpeg.

Rendering is headless and pip-only: meshes are drawn with matplotlib's Agg renderer (Gouraud-shaded triangles,
back-to-front painter's order, anti-aliased), text with Pillow. No OpenGL, no display, no system package.
See docs/RENDERING.md.

Entry point: :func:`render_dialog` (also behind ``scripts/render.py``).
"""
from __future__ import annotations

import logging
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from common.viz.flame import FLAME_URL, FlameModel, load_flame_model
from common.eval.predictions import PredictionError, open_prediction
from common.layout import EXPRESSION_DIMS, SHAPE_DIMS, STATE_NAMES, Layout, LayoutError, layout_for_dim

log = logging.getLogger(__name__)

FPS = 30.0
SAMPLE_RATE = 48000

BG = (22, 24, 30)
PANEL_BG = (44, 48, 58)
TEXT = (232, 232, 236)
DIM_TEXT = (150, 154, 164)
STATE_COLORS = {0: (110, 112, 120), 1: (66, 133, 244), 2: (240, 136, 30), 3: (176, 74, 196)}
NO_STATE = (60, 62, 70)
PARTICIPANT_COLORS = [(86, 180, 233), (235, 170, 40)]
TRUTH_COLOR = (200, 200, 205)
ALBEDO = np.array([0.80, 0.68, 0.60])       # clay
BACKFACE = np.array([0.10, 0.07, 0.07])     # inside of the mouth / head


class RenderError(ValueError):
    """Missing or inconsistent inputs for a video."""


# --------------------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------------------
@dataclass
class Track:
    """One participant's FLAME parameters over time."""
    expression: np.ndarray            # (T, E)
    jaw: np.ndarray                   # (T, 3)
    neck: np.ndarray | None           # (T, 3)
    label: str                        # "generated", "ground truth", ...

    def __len__(self) -> int:
        return len(self.expression)

    def crop(self, n: int) -> "Track":
        return Track(self.expression[:n], self.jaw[:n], None if self.neck is None else self.neck[:n], self.label)


@dataclass
class DialogData:
    dialog: str
    participants: list[str]
    generated: list[Track]
    truth: list[Track] | None = None
    shapes: list[np.ndarray | None] = field(default_factory=lambda: [None, None])
    states: np.ndarray | None = None          # (2, T) int
    states_source: str = ""
    audio: list[np.ndarray] | None = None     # two mono float32 tracks at sample_rate
    sample_rate: int = SAMPLE_RATE
    fps: float = FPS

    @property
    def num_frames(self) -> int:
        return len(self.generated[0])


def motion_to_track(motion: np.ndarray, label: str, layout: Layout | None = None) -> Track:
    """A (T, D) motion array in ``layout`` (default: this system's layout of D dims, :mod:`common.layout`)."""
    motion = np.asarray(motion, np.float32)
    if motion.ndim != 2:
        raise RenderError(f"motion has shape {motion.shape}, expected (T, D)")
    try:
        exp, jaw1, neck = (layout or layout_for_dim(motion.shape[1])).parts(motion)
    except LayoutError as e:
        raise RenderError(f"motion has {motion.shape[1]} dims: {e}") from e
    jaw = np.zeros((len(motion), 3), np.float32)
    jaw[:, :1] = jaw1[:, :1]
    return Track(exp, jaw, neck, label)


def _flame_key(arrays: dict, key: str, path: Path) -> np.ndarray:
    a = np.asarray(arrays[key], np.float32)
    if a.ndim == 3:
        a = a[:, 0, :]
    if a.ndim != 2:
        raise RenderError(f"{path}: {key} has shape {a.shape}, expected (T, 1, K)")
    return a


def read_track(path: str | Path, label: str = "generated") -> tuple[Track, np.ndarray | None, np.ndarray | None]:
    """A prediction file (common/eval/predictions.py's layout) -> (track, shape or None, predicted states or None)."""
    path = Path(path)
    try:
        z = open_prediction(path)
    except PredictionError as e:
        raise RenderError(str(e)) from e
    keys = set(z)
    shape = states = None
    try:
        if "shape_params" in keys:
            sp = np.asarray(z["shape_params"], np.float32).reshape(-1)
            shape = sp[:SHAPE_DIMS] if sp.size else None
        if "pred_states" in keys:
            states = np.asarray(z["pred_states"]).reshape(-1).astype(np.int64)
        if "expression_params" in keys and "jaw_params" in keys:
            exp = _flame_key(z, "expression_params", path)
            jaw = _flame_key(z, "jaw_params", path)
            neck = _flame_key(z, "pose_params", path) if "pose_params" in keys else None
            if jaw.shape[1] < 3:
                jaw = np.pad(jaw, ((0, 0), (0, 3 - jaw.shape[1])))
            T = min(len(exp), len(jaw), len(neck) if neck is not None else len(exp))
            if neck is not None and (neck.shape[1] != 3 or not np.any(neck[:T])):
                neck = None
            track = Track(exp[:T], jaw[:T, :3], None if neck is None else neck[:T], label)
        elif "motion" in keys:
            track = motion_to_track(z["motion"], label)
        else:
            raise RenderError(f"{path}: no 'motion' or 'expression_params' + 'jaw_params' (keys: {sorted(keys)})")
    except ValueError as e:
        if isinstance(e, RenderError):
            raise
        raise RenderError(f"cannot read prediction file {path}: {e}") from e
    if not np.isfinite(track.expression).all() or not np.isfinite(track.jaw).all():
        raise RenderError(f"{path}: motion holds NaN/Inf")
    return track, shape, states


def _prediction_files(pred_dir: Path) -> dict[str, Path]:
    files = {}
    for p in sorted(pred_dir.iterdir()):
        if p.suffix in (".npz", ".npy") and p.is_file() and not p.name.startswith("."):
            files.setdefault(p.stem, p)
    return files


def _open_cache(cache):
    if cache is None:
        return None
    from common.data.cache import Cache
    return cache if isinstance(cache, Cache) else Cache(cache)


def corpus_audio(cache, dialog: str, participants: Sequence[str]) -> tuple[list[np.ndarray], int]:
    """Both participants' WAVs of ``dialog`` from the corpus the cache was built from (manifest data_config)."""
    from common import config as config_lib
    from common.data.audio import read_wav
    from common.data.corpus import load_index, resolve
    from common.data.config import DataConfig
    cfg = config_lib.from_dict(DataConfig, cache.manifest["data_config"])
    index = load_index(cfg)
    if dialog not in index:
        raise RenderError(f"dialog {dialog} is not in the corpus index {cfg.index}")
    tracks = []
    for pid in participants:
        rec = index[dialog].get(pid)
        if rec is None or "audio_path" not in rec:
            raise RenderError(f"dialog {dialog}: no audio_path for participant {pid} in the corpus index")
        path = resolve(cfg, rec["audio_path"], dialog, pid, "audio_path")
        tracks.append(read_wav(path, cfg.sample_rate, what=f"dialog {dialog}, participant {pid}: "))
    return tracks, int(cfg.sample_rate)


def load_dialog(pred_dir: str | Path, cache=None, show_gt: bool = True, audio: Sequence[str | Path] | None = None,
                participants: Sequence[str] | None = None) -> DialogData:
    """Gather what a video of ``pred_dir`` (= DIR/<dialog>) shows: generated motion of both participants, and
    from the cache (when given) the ground truth, identities, true states and the corpus WAVs."""
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise RenderError(f"prediction folder {pred_dir} not found (expected DIR/<dialog>/<participant>.npz)")
    dialog = pred_dir.name
    files = _prediction_files(pred_dir)
    cache = _open_cache(cache)
    entry = cache.dialog(dialog) if cache is not None else None
    if participants is None:
        participants = list(entry["participants"]) if entry is not None else sorted(files)
    participants = list(participants)
    if len(participants) != 2 or participants[0] == participants[1]:
        raise RenderError(f"{pred_dir}: need two different participants, found {participants} "
                          f"(files: {sorted(p.name for p in files.values())})")

    arrays = None
    if cache is not None:
        arrays = cache.load(dialog, mmap=False)
    truth = None
    if arrays is not None:
        truth = [motion_to_track(arrays.motion[p], "ground truth", cache.layout) for p in range(2)]

    generated, shapes, pred_states = [], [], []
    for p, pid in enumerate(participants):
        if pid in files:
            track, shape, states = read_track(files[pid])
        elif truth is not None:
            log.info("%s: no prediction for %s: showing its ground truth (the given partner)", dialog, pid)
            track, shape, states = truth[p], None, None
            track = Track(track.expression, track.jaw, track.neck, "given (ground truth)")
        else:
            raise RenderError(f"{pred_dir}: no prediction file for participant {pid} "
                              f"(found {sorted(p.name for p in files.values())})")
        if shape is None and arrays is not None:
            shape = np.asarray(arrays.shape[p], np.float32)[:SHAPE_DIMS]
        generated.append(track)
        shapes.append(shape)
        pred_states.append(states)

    states, states_source = None, ""
    if arrays is not None:
        states, states_source = np.asarray(arrays.states, np.int64), "true states"
    elif all(s is not None for s in pred_states):
        n = min(len(s) for s in pred_states)
        states, states_source = np.stack([s[:n] for s in pred_states]), "predicted states"
        if n == 0 or states.min() < 0 or states.max() > 3:
            log.warning("%s: pred_states hold values outside 0..3: no state strip", dialog)
            states, states_source = None, ""

    wav, rate = None, SAMPLE_RATE
    if audio:
        if len(audio) != 2:
            raise RenderError("give both participants' WAVs (--audio-a and --audio-b)")
        from common.data.audio import read_wav
        wav = [read_wav(a, SAMPLE_RATE, what=f"{a}: ") for a in audio]
    elif cache is not None:
        try:
            wav, rate = corpus_audio(cache, dialog, participants)
        except Exception as e:  # noqa: BLE001 - the video is still useful without sound
            log.warning("no audio for %s (%s): the video will be silent; pass --audio-a/--audio-b", dialog, e)

    fps = float(cache.fps) if cache is not None else FPS
    lengths = {f"{participants[p]} {generated[p].label}": len(generated[p]) for p in range(2)}
    if truth is not None and show_gt:
        lengths.update({f"{participants[p]} ground truth": len(truth[p]) for p in range(2)})
    if states is not None:
        lengths["states"] = states.shape[1]
    T = min(lengths.values())
    if max(lengths.values()) - T > fps:
        log.warning("%s: lengths differ by more than 1 s (%s): rendering the first %d frames", dialog, lengths, T)
    if wav is not None:
        hop = rate / fps
        short = [len(w) for w in wav if len(w) < T * hop - rate]
        if short:
            log.warning("%s: audio is shorter than the motion (%s samples for %d frames): padded with silence",
                        dialog, short, T)
    return DialogData(dialog, participants, [g.crop(T) for g in generated],
                      [t.crop(T) for t in truth] if (truth is not None and show_gt) else None,
                      shapes, None if states is None else states[:, :T], states_source, wav, rate, fps)


# --------------------------------------------------------------------------------------------------------------
# Mesh rendering (matplotlib Agg, Gouraud triangles)
# --------------------------------------------------------------------------------------------------------------
class MeshRenderer:
    """Orthographic front view of one FLAME identity, framed once from its neutral head, drawn in a square panel.

    Front faces are Gouraud-shaded (two directional lights + ambient + a little specular) and painted back to
    front; back faces (inside the mouth and head, seen through the open mouth) are painted dark underneath.
    """

    def __init__(self, faces: np.ndarray, neutral: np.ndarray, size: int = 320, margin: float = 0.06,
                 background=PANEL_BG):
        from matplotlib.backends.backend_agg import RendererAgg
        from matplotlib.transforms import IdentityTransform
        self.size = int(size)
        self.background = np.asarray(background, np.float64) / 255.0
        faces = np.asarray(faces, np.int64)
        # orient faces outward (FLAME is counter-clockwise outward; a mirrored export would render inside-out)
        v = np.asarray(neutral, np.float64)
        vol = np.einsum("ij,ij->i", v[faces[:, 0]], np.cross(v[faces[:, 1]], v[faces[:, 2]])).sum()
        self.faces = faces if vol >= 0 else faces[:, ::-1].copy()
        self.holes = boundary_loops(self.faces)
        lo, hi = v.min(0), v.max(0)
        self.center = (lo + hi) / 2
        extent = max(hi[0] - lo[0], hi[1] - lo[1], 1e-9)
        self.scale = self.size * (1 - 2 * margin) / extent
        self._agg = RendererAgg(self.size, self.size, 72)
        self._identity = IdentityTransform()
        s = float(self.size)
        bg = np.concatenate([self.background, [1.0]])
        self._bg_tris = np.array([[[0, 0], [s, 0], [s, s]], [[0, 0], [s, s], [0, s]]], np.float64)
        self._bg_cols = np.broadcast_to(bg, (2, 3, 4)).copy()
        lights = np.array([[-0.35, 0.45, 0.82], [0.6, 0.1, 0.8]])
        self.lights = lights / np.linalg.norm(lights, axis=1, keepdims=True)
        self.light_strength = np.array([0.62, 0.28])
        half = self.lights[0] + np.array([0, 0, 1.0])
        self.half = half / np.linalg.norm(half)

    def _visible_back_faces(self, back: np.ndarray, xy: np.ndarray) -> np.ndarray:
        """Back faces that can show: seen from outside, a back face is visible only through a hole of the
        surface (mouth, neck, eyes), so, in an orthographic view, only inside the 2-D box of a hole's boundary."""
        if self.holes is None or not len(back):
            return back
        if not self.holes:
            return back[:0]
        x, y = xy[:, 0][back], xy[:, 1][back]                                    # (n, 3) each
        x0, x1 = np.minimum(np.minimum(x[:, 0], x[:, 1]), x[:, 2]), np.maximum(np.maximum(x[:, 0], x[:, 1]), x[:, 2])
        y0, y1 = np.minimum(np.minimum(y[:, 0], y[:, 1]), y[:, 2]), np.maximum(np.maximum(y[:, 0], y[:, 1]), y[:, 2])
        keep = np.zeros(len(back), bool)
        for loop in self.holes:
            p = xy[loop]
            (ax, ay), (bx, by) = p.min(0) - 1, p.max(0) + 1
            keep |= (x1 >= ax) & (x0 <= bx) & (y1 >= ay) & (y0 <= by)
        return back[keep]

    def shade(self, verts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-vertex RGB (V, 3) and per-face normals (F, 3) of posed vertices."""
        f = self.faces
        fn = np.cross(verts[f[:, 1]] - verts[f[:, 0]], verts[f[:, 2]] - verts[f[:, 0]])
        V = len(verts)
        vn = np.stack([np.bincount(f.ravel(), weights=np.repeat(fn[:, c], 3), minlength=V) for c in range(3)], 1)
        vn /= np.maximum(np.linalg.norm(vn, axis=1, keepdims=True), 1e-12)
        diffuse = np.clip(vn @ self.lights.T, 0, None) @ self.light_strength
        spec = 0.18 * np.clip(vn @ self.half, 0, None) ** 24
        rgb = ALBEDO[None] * (0.28 + diffuse)[:, None] + spec[:, None]
        return np.clip(rgb, 0, 1), fn

    def render(self, verts: np.ndarray) -> np.ndarray:
        """Posed vertices (V, 3) in FLAME coordinates (y up, looking down -z) -> (size, size, 3) uint8."""
        verts = np.asarray(verts, np.float64)
        rgb, fn = self.shade(verts)
        f = self.faces
        xy = (verts[:, :2] - self.center[:2]) * self.scale + self.size / 2.0   # Agg display coords: y up
        front = fn[:, 2] > 0
        agg = self._agg
        agg.clear()
        gc = agg.new_gc()
        gc.set_antialiased(True)
        agg.draw_gouraud_triangles(gc, self._bg_tris, self._bg_cols, self._identity)
        back = self._visible_back_faces(f[~front], xy)
        if len(back):
            cols = np.empty((len(back), 3, 4))
            cols[..., :3] = BACKFACE
            cols[..., 3] = 1.0
            agg.draw_gouraud_triangles(gc, xy[back], cols, self._identity)
        ff = f[front]
        order = np.argsort(verts[ff, 2].sum(1), kind="stable")        # far to near
        ff = ff[order]
        cols = np.empty((len(ff), 3, 4))
        cols[..., :3] = rgb[ff]
        cols[..., 3] = 1.0
        agg.draw_gouraud_triangles(gc, xy[ff], cols, self._identity)
        gc.restore()
        return np.asarray(agg.buffer_rgba())[:, :, :3].copy()


def boundary_loops(faces: np.ndarray, max_loops: int = 64) -> list[np.ndarray] | None:
    """Vertex sets of the mesh's holes (connected components of edges used by one face only); None when the
    mesh is not a clean manifold (an edge used by more than two faces) or has too many holes to bother."""
    e = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    edges, counts = np.unique(e, axis=0, return_counts=True)
    if (counts > 2).any():
        return None
    border = edges[counts == 1]
    if not len(border):
        return []
    # connected components of the border edges (union-find over vertex ids)
    parent = {int(v): int(v) for v in np.unique(border)}

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x
    for a, b in border.tolist():
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[ra] = rb
    groups: dict[int, list[int]] = {}
    for v in parent:
        groups.setdefault(find(v), []).append(v)
    if len(groups) > max_loops:
        return None
    return [np.array(sorted(g), np.int64) for g in groups.values()]


def frame_vertices(model: FlameModel, track: Track, shape, start: int, stop: int,
                   expression_dims: int = EXPRESSION_DIMS) -> np.ndarray:
    E = min(expression_dims, track.expression.shape[1], model.num_expression)
    return model.vertices(np.zeros(0) if shape is None else shape, track.expression[start:stop, :E],
                          track.jaw[start:stop], None if track.neck is None else track.neck[start:stop])


# --------------------------------------------------------------------------------------------------------------
# Frame composition (Pillow for text and lines)
# --------------------------------------------------------------------------------------------------------------
def _font(size: int):
    from PIL import ImageFont
    try:
        from matplotlib import font_manager
        return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size)
    except Exception:  # noqa: BLE001 - any font is better than none
        try:
            return ImageFont.load_default(size)
        except TypeError:
            return ImageFont.load_default()


def _round16(n: int) -> int:
    return int(math.ceil(n / 16) * 16)


def _fmt_time(t: float) -> str:
    return f"{int(t // 60):d}:{t % 60:04.1f}"


class StateStrip:
    """A scrolling strip of one participant's states around the current frame, playhead in the middle."""

    def __init__(self, states: np.ndarray | None, width: int, height: int, fps: float, window_s: float = 8.0):
        self.states, self.w, self.h = states, width, height
        self.frames_per_px = window_s * fps / width
        lut = np.array([NO_STATE] + [STATE_COLORS[k] for k in range(4)], np.uint8)
        self.lut = lut
        self.offsets = (np.arange(width) - width / 2) * self.frames_per_px

    def draw(self, t: int) -> np.ndarray:
        if self.states is None:
            return np.broadcast_to(np.array(NO_STATE, np.uint8), (self.h, self.w, 3)).copy()
        idx = np.round(t + self.offsets).astype(np.int64)
        ok = (idx >= 0) & (idx < len(self.states))
        codes = np.where(ok, self.states[np.clip(idx, 0, len(self.states) - 1)] + 1, 0)
        row = self.lut[codes]
        img = np.repeat(row[None], self.h, axis=0)
        c = self.w // 2
        img[:, c - 1:c + 1] = (255, 255, 255)
        return img


class Canvas:
    """Fixed layout: header, rows of panels (one column per participant), state strips, legend."""

    HEADER, STRIP, STRIP_LABEL, LEGEND = 30, 16, 18, 24

    def __init__(self, data: DialogData, panel_w: int, panel_h: int, row_labels: list[str] | None, notice: str = ""):
        from PIL import Image, ImageDraw
        self.data, self.pw, self.ph = data, panel_w, panel_h
        self.rows = len(row_labels) if row_labels else 1
        self.W = _round16(2 * panel_w)
        self.notice_h = 18 if notice else 0
        self.strip_top = self.HEADER + self.notice_h + self.rows * panel_h
        body = self.strip_top + self.STRIP_LABEL + self.STRIP + self.LEGEND
        self.H = _round16(body)
        self.font, self.small = _font(15), _font(12)
        base = Image.new("RGB", (self.W, self.H), BG)
        d = ImageDraw.Draw(base)
        d.text((10, 7), data.dialog, fill=TEXT, font=self.font)
        if notice:
            d.text((10, self.HEADER), notice, fill=(250, 200, 120), font=self.small)
        # legend
        x = 10
        y = self.strip_top + self.STRIP_LABEL + self.STRIP + 6
        for k in range(4):
            d.rectangle([x, y + 2, x + 10, y + 12], fill=STATE_COLORS[k])
            d.text((x + 15, y), STATE_NAMES[k], fill=DIM_TEXT, font=self.small)
            x += 28 + int(d.textlength(STATE_NAMES[k], font=self.small))
        if data.states is None:
            d.text((x + 10, y), "states unknown (no cache, no pred_states)", fill=DIM_TEXT, font=self.small)
        else:
            d.text((x + 10, y), f"({data.states_source})", fill=DIM_TEXT, font=self.small)
        self.base = np.asarray(base).copy()
        self.row_labels = row_labels
        self.strips = [StateStrip(None if data.states is None else data.states[p], panel_w - 8, self.STRIP, data.fps)
                       for p in range(2)]
        self.total = data.num_frames / data.fps

    def panel_origin(self, row: int, col: int) -> tuple[int, int]:
        return col * self.pw, self.HEADER + self.notice_h + row * self.ph

    def compose(self, t: int, panels: list[list[np.ndarray]]) -> np.ndarray:
        """panels[row][col] (ph, pw, 3) uint8 -> the frame (H, W, 3) uint8."""
        from PIL import Image, ImageDraw
        img = self.base.copy()
        for r, row in enumerate(panels):
            for c, panel in enumerate(row):
                x, y = self.panel_origin(r, c)
                img[y:y + self.ph, x:x + self.pw] = panel
        for c in range(2):
            x = c * self.pw + 4
            img[self.strip_top + self.STRIP_LABEL:self.strip_top + self.STRIP_LABEL + self.STRIP, x:x + self.pw - 8] = \
                self.strips[c].draw(t)
        # state borders on the top row's panels
        if self.data.states is not None:
            for c in range(2):
                col = STATE_COLORS[int(self.data.states[c, t])]
                x, y = self.panel_origin(0, c)
                img[y:y + 3, x:x + self.pw] = col
        pil = Image.fromarray(img)
        d = ImageDraw.Draw(pil)
        now = f"{_fmt_time(t / self.data.fps)} / {_fmt_time(self.total)}"
        d.text((self.W - 10 - d.textlength(now, font=self.font), 7), now, fill=TEXT, font=self.font)
        for r, label in enumerate(self.row_labels or []):
            for c in range(2):
                x, y = self.panel_origin(r, c)
                track = self._track(r, c)
                text = f"{self.data.participants[c]} - {track.label if track is not None else label}"
                d.text((x + 8, y + 6), text, fill=TEXT, font=self.small)
        for c in range(2):
            x = c * self.pw + 4
            name = self.data.participants[c]
            if self.data.states is not None:
                s = int(self.data.states[c, t])
                d.text((x, self.strip_top + 2), f"{name}: {STATE_NAMES[s]}", fill=STATE_COLORS[s], font=self.small)
            else:
                d.text((x, self.strip_top + 2), name, fill=DIM_TEXT, font=self.small)
        return np.asarray(pil)

    def _track(self, row: int, col: int):
        if self.row_labels[row] == "ground truth" and self.data.truth is not None:
            return self.data.truth[col]
        if self.row_labels[row] == "generated":
            return self.data.generated[col]
        return None


# --------------------------------------------------------------------------------------------------------------
# Coefficient view (no FLAME model)
# --------------------------------------------------------------------------------------------------------------
class CoefficientPanel:
    """Scrolling traces of the jaw and a few expression coefficients of one participant (playhead in the middle);
    generated solid, ground truth thin grey."""

    def __init__(self, data: DialogData, col: int, width: int, lanes: list[tuple[str, int]], lane_h: int,
                 ranges: list[tuple[float, float]], window_s: float = 6.0):
        from PIL import Image, ImageDraw
        self.data, self.col, self.w, self.lanes, self.lane_h, self.ranges = data, col, width, lanes, lane_h, ranges
        self.h = lane_h * len(lanes) + 28
        self.half = int(round(window_s * data.fps / 2))
        self.left = 62
        self.plot_w = width - self.left - 10
        base = Image.new("RGB", (width, self.h), PANEL_BG)
        d = ImageDraw.Draw(base)
        small = _font(12)
        for i, (name, _) in enumerate(lanes):
            y0 = 28 + i * lane_h
            d.line([(self.left, y0 + lane_h - 1), (width - 10, y0 + lane_h - 1)], fill=(60, 64, 76))
            d.text((8, y0 + lane_h // 2 - 8), name, fill=DIM_TEXT, font=small)
            lo, hi = ranges[i]
            zero = self._y(0.0, i)
            if y0 < zero < y0 + lane_h:
                d.line([(self.left, zero), (width - 10, zero)], fill=(72, 76, 90))
        cx = self.left + self.plot_w // 2
        d.line([(cx, 26), (cx, self.h - 2)], fill=(230, 230, 230), width=1)
        self.base = np.asarray(base).copy()
        self.font = small
        self.series = []
        sources = [(data.generated[col], PARTICIPANT_COLORS[col], 2)]
        if data.truth is not None:
            sources.insert(0, (data.truth[col], TRUTH_COLOR, 1))
        for track, color, width_px in sources:
            vals = np.stack([self._value(track, k) for _, k in lanes], 0)      # (lanes, T)
            self.series.append((vals, color, width_px, track.label))

    @staticmethod
    def _value(track: Track, k: int) -> np.ndarray:
        return track.jaw[:, 0] if k < 0 else track.expression[:, k]

    def _y(self, v, lane: int):
        lo, hi = self.ranges[lane]
        y0 = 28 + lane * self.lane_h + 4
        h = self.lane_h - 8
        return y0 + h - (np.clip(v, lo, hi) - lo) / (hi - lo) * h

    def draw(self, t: int) -> np.ndarray:
        from PIL import Image, ImageDraw
        img = Image.fromarray(self.base.copy())
        d = ImageDraw.Draw(img)
        T = self.data.num_frames
        a, b = max(0, t - self.half), min(T, t + self.half + 1)
        xs = self.left + self.plot_w / 2 + (np.arange(a, b) - t) * (self.plot_w / (2 * self.half))
        for vals, color, width_px, _ in self.series:
            for i in range(len(self.lanes)):
                ys = self._y(vals[i, a:b], i)
                if len(xs) > 1:
                    d.line(np.stack([xs, ys], 1).ravel().tolist(), fill=color, width=width_px)
        # legend + current values
        name = self.data.participants[self.col]
        d.text((8, 6), name, fill=PARTICIPANT_COLORS[self.col], font=self.font)
        x = 20 + int(d.textlength(name, font=self.font))
        for vals, color, _, label in reversed(self.series):
            txt = label
            d.line([(x, 14), (x + 16, 14)], fill=color, width=2)
            d.text((x + 20, 6), txt, fill=TEXT, font=self.font)
            x += 40 + int(d.textlength(txt, font=self.font))
        gen = self.series[-1][0]
        for i in range(len(self.lanes)):
            d.text((self.w - 60, 28 + i * self.lane_h + 2), f"{gen[i, t]:+.2f}", fill=DIM_TEXT, font=self.font)
        return np.asarray(img)


def coefficient_lanes(num_expression: int = 4) -> list[tuple[str, int]]:
    return [("jaw", -1)] + [(f"exp {k}", k) for k in range(num_expression)]


def lane_ranges(data: DialogData, lanes) -> list[tuple[float, float]]:
    tracks = list(data.generated) + (list(data.truth) if data.truth is not None else [])
    out = []
    for _, k in lanes:
        vals = np.concatenate([CoefficientPanel._value(tr, k) for tr in tracks])
        lo, hi = np.percentile(vals, [0.5, 99.5]) if len(vals) else (0.0, 1.0)
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        pad = 0.08 * (hi - lo) + 1e-3
        out.append((float(lo - pad), float(hi + pad)))
    return out


# --------------------------------------------------------------------------------------------------------------
# Audio and video writing
# --------------------------------------------------------------------------------------------------------------
def mix_audio(tracks: Sequence[np.ndarray], num_samples: int, pan: float = 0.7) -> np.ndarray:
    """Two mono tracks -> stereo (num_samples, 2) float32: A leans left, B right (both audible on each side),
    cut or zero-padded to ``num_samples``, scaled down only if it would clip."""
    out = np.zeros((num_samples, 2), np.float32)
    gains = [(pan, 1 - pan), (1 - pan, pan)]
    for track, (gl, gr) in zip(tracks, gains):
        x = np.asarray(track, np.float32)[:num_samples]
        out[:len(x), 0] += gl * x
        out[:len(x), 1] += gr * x
    peak = float(np.abs(out).max()) if num_samples else 0.0
    if peak > 0.99:
        out *= 0.99 / peak
    return out


def write_video(path: str | Path, frames: Iterable[np.ndarray], size: tuple[int, int], fps: float,
                audio: np.ndarray | None = None, sample_rate: int = SAMPLE_RATE, quality: float = 7) -> int:
    """Encode RGB frames (H, W, 3) uint8 of ``size`` = (W, H) (multiples of 16) as H.264 (+ AAC audio) MP4,
    atomically: written to a temp file beside ``path`` and renamed. Returns the number of frames written."""
    try:
        import imageio_ffmpeg
    except ImportError as e:  # the optional "render" extra
        raise RenderError("writing MP4 needs imageio-ffmpeg: pip install 'dyadic-face[render]'") from e
    import soundfile as sf
    from common.io import atomic_path
    path = Path(path)
    n = 0
    with tempfile.TemporaryDirectory(prefix="render-audio-") as tmpdir:
        wav = None
        if audio is not None:
            wav = str(Path(tmpdir) / "mix.wav")
            sf.write(wav, audio, sample_rate, subtype="FLOAT")
        with atomic_path(path, suffix=path.suffix or ".mp4") as tmp:
            writer = imageio_ffmpeg.write_frames(
                str(tmp), size, fps=fps, codec="libx264", quality=quality, macro_block_size=16, ffmpeg_log_level="error",
                audio_path=wav, audio_codec="aac" if wav else None,
                output_params=["-movflags", "+faststart"] + (["-b:a", "160k"] if wav else []))
            writer.send(None)
            try:
                for frame in frames:
                    if frame.shape != (size[1], size[0], 3):
                        raise RenderError(f"frame of shape {frame.shape}, expected {(size[1], size[0], 3)}")
                    writer.send(np.ascontiguousarray(frame, np.uint8))
                    n += 1
            finally:
                writer.close()
    return n


# --------------------------------------------------------------------------------------------------------------
# Whole videos
# --------------------------------------------------------------------------------------------------------------
@dataclass
class RenderResult:
    path: Path
    mode: str                 # "mesh" | "coefficients"
    frames: int
    seconds: float            # video duration
    render_fps: float         # frames composed + encoded per second of wall time
    has_audio: bool


def _progress(it, total: int, enabled: bool, desc: str):
    if not enabled:
        return it
    from tqdm.auto import tqdm
    return tqdm(it, total=total, desc=desc, unit="frame", dynamic_ncols=True, mininterval=0.5)


def mesh_frames(data: DialogData, model: FlameModel, size: int = 320, chunk: int = 32) -> tuple[Canvas, Iterator]:
    rows = ["generated"] + (["ground truth"] if data.truth is not None else [])
    canvas = Canvas(data, size, size, rows)
    renderers = [MeshRenderer(model.faces, model.neutral(data.shapes[c]), size) for c in range(2)]
    tracks = [[data.generated[c] for c in range(2)]]
    if data.truth is not None:
        tracks.append([data.truth[c] for c in range(2)])

    def gen():
        T = data.num_frames
        for start in range(0, T, chunk):
            stop = min(T, start + chunk)
            verts = [[frame_vertices(model, tracks[r][c], data.shapes[c], start, stop) for c in range(2)]
                     for r in range(len(tracks))]
            for i in range(stop - start):
                panels = [[renderers[c].render(verts[r][c][i]) for c in range(2)] for r in range(len(tracks))]
                yield canvas.compose(start + i, panels)
    return canvas, gen()


def coefficient_frames(data: DialogData, width: int = 480) -> tuple[Canvas, Iterator]:
    lanes = coefficient_lanes()
    ranges = lane_ranges(data, lanes)
    panels = [CoefficientPanel(data, c, width, lanes, 62, ranges) for c in range(2)]
    notice = f"coefficient view: no FLAME model given. For shaded heads get FLAME at {FLAME_URL} and pass --flame-model"
    canvas = Canvas(data, width, panels[0].h, None, notice=notice)

    def gen():
        for t in range(data.num_frames):
            yield canvas.compose(t, [[panels[c].draw(t) for c in range(2)]])
    return canvas, gen()


def render_video(data: DialogData, out_path: str | Path, flame_model: FlameModel | str | Path | None = None,
                 size: int = 320, progress: bool = True, warn_no_model: bool = True) -> RenderResult:
    """Write the video of ``data``: FLAME meshes when a model is given, else the coefficient view."""
    if isinstance(flame_model, (str, Path)):
        flame_model = load_flame_model(flame_model)
    if flame_model is None:
        (log.warning if warn_no_model else log.debug)("no FLAME model given: writing the coefficient view. For shaded heads download FLAME "
                    "(free for research, registration required) from %s and pass --flame-model "
                    "FLAME2020/generic_model.pkl", FLAME_URL)
        canvas, frames = coefficient_frames(data)
        mode = "coefficients"
    else:
        canvas, frames = mesh_frames(data, flame_model, size)
        mode = "mesh"
    T = data.num_frames
    audio = None
    if data.audio is not None:
        audio = mix_audio(data.audio, int(round(T * data.sample_rate / data.fps)))
    else:
        log.info("no audio (give --audio-a/--audio-b, or a cache whose corpus is reachable): silent video")
    t0 = time.perf_counter()
    n = write_video(out_path, _progress(frames, T, progress, f"render {data.dialog}"), (canvas.W, canvas.H),
                    data.fps, audio, data.sample_rate)
    dt = time.perf_counter() - t0
    res = RenderResult(Path(out_path), mode, n, n / data.fps, n / dt if dt > 0 else float("inf"), audio is not None)
    log.info("wrote %s: %d frames (%.1f s, %s view%s) at %.1f frames/s", out_path, n, res.seconds, mode,
             ", with audio" if audio is not None else ", silent", res.render_fps)
    return res


def crop_dialog(data: DialogData, seconds: float | None = None, start: float = 0.0) -> DialogData:
    """The part of ``data`` from ``start`` seconds, ``seconds`` long (None: to the end)."""
    T = data.num_frames
    a = min(T - 1, max(0, int(round(start * data.fps))))
    b = T if seconds is None else min(T, a + max(1, int(round(seconds * data.fps))))
    if a == 0 and b == T:
        return data

    def cut(tr: Track) -> Track:
        return Track(tr.expression[a:b], tr.jaw[a:b], None if tr.neck is None else tr.neck[a:b], tr.label)
    hop = data.sample_rate / data.fps
    audio = None if data.audio is None else [w[int(round(a * hop)):int(round(b * hop))] for w in data.audio]
    return DialogData(data.dialog, data.participants, [cut(g) for g in data.generated],
                      None if data.truth is None else [cut(g) for g in data.truth], data.shapes,
                      None if data.states is None else data.states[:, a:b], data.states_source, audio,
                      data.sample_rate, data.fps)


def render_dialog(pred_dir: str | Path, out_path: str | Path, cache=None, flame_model=None,
                  seconds: float | None = None, *, start: float = 0.0, show_gt: bool = True,
                  audio: Sequence[str | Path] | None = None, participants: Sequence[str] | None = None,
                  size: int = 320, progress: bool = True) -> RenderResult:
    """Render ``pred_dir`` (= DIR/<dialog>, one prediction file per participant) to ``out_path`` (MP4).

    cache: preprocessing cache (path or Cache): ground truth row (``show_gt``), identities, true states and the
    corpus WAVs. flame_model: FLAME file / FlameModel, or None for the coefficient view. seconds/start: render
    only that part. audio: two WAV paths (A, B) instead of the corpus audio.
    """
    data = load_dialog(pred_dir, cache=cache, show_gt=show_gt, audio=audio, participants=participants)
    data = crop_dialog(data, seconds, start)
    return render_video(data, out_path, flame_model, size=size, progress=progress)


# --------------------------------------------------------------------------------------------------------------
# Benchmark (no files needed): FLAME-sized stand-in model, synthetic motion, states and audio
# --------------------------------------------------------------------------------------------------------------
def synthetic_dialog(seconds: float = 10.0, fps: float = FPS, sample_rate: int = SAMPLE_RATE, seed: int = 0,
                     truth: bool = True) -> DialogData:
    rng = np.random.default_rng(seed)
    T = int(round(seconds * fps))

    def track(label):
        exp = np.cumsum(rng.normal(size=(T, EXPRESSION_DIMS)) * 0.15, 0)
        exp = (exp - exp.mean(0)) / (exp.std(0) + 1e-6)
        jaw = np.zeros((T, 3), np.float32)
        jaw[:, 0] = np.clip(0.12 + 0.1 * np.sin(np.arange(T) / fps * 2 * np.pi * 3 + rng.uniform(0, 6)), 0, None)
        return Track(exp.astype(np.float32), jaw, None, label)
    blocks = np.repeat(rng.integers(0, 4, size=T // 30 + 1), 30)[:T]
    partner = np.array([0, 2, 1, 3])[blocks]
    audio = [rng.normal(size=int(T * sample_rate / fps)).astype(np.float32) * 0.05 for _ in range(2)]
    return DialogData("benchmark", ["A", "B"], [track("generated"), track("generated")],
                      [track("ground truth"), track("ground truth")] if truth else None,
                      [rng.normal(size=SHAPE_DIMS).astype(np.float32) * 0.5 for _ in range(2)],
                      np.stack([blocks, partner]), "synthetic", audio, sample_rate, fps)


def benchmark(seconds: float = 10.0, size: int = 320, out_dir: str | Path | None = None) -> dict[str, float]:
    """Frames/s of the three videos (mesh with / without the ground-truth row, coefficient view) on a
    FLAME-sized stand-in model (``synthetic_flame_arrays(72, 70)``: 4,902 vertices, 9,800 faces)."""
    from common.viz.flame import REQUIRED_KEYS, synthetic_flame_arrays
    arrays = synthetic_flame_arrays(72, 70)
    model = FlameModel(*(arrays[k] for k in REQUIRED_KEYS), source="synthetic")
    results = {}
    with tempfile.TemporaryDirectory(prefix="render-bench-") as tmp:
        out = Path(out_dir or tmp)
        for name, truth, m in (("mesh, generated + ground truth (4 heads)", True, model),
                               ("mesh, generated only (2 heads)", False, model),
                               ("coefficient view, generated + ground truth", True, None)):
            data = synthetic_dialog(seconds, truth=truth)
            res = render_video(data, out / f"{len(results)}.mp4", m, size=size, progress=False, warn_no_model=False)
            results[name] = res.render_fps
    return results
