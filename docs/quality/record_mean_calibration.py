"""A record, not a tool (paths are those of the run, 2026-12-05, fifth session; issue 19). Is the GPT's plain mean of
dyad-mode samples calibrated? The samples kept by record_mix_gain_draw.py (run 15's GPTs, 8 + 8 samples per test
dialog) are averaged and the least-squares scale alpha of `truth - c ~ alpha * (mean - c)` (c: the train mean) is
fitted over all frames, seeds and dialogs, in total and within sequences (each side demeaned per sequence).
alpha > 1 would say the mean is shrunk (then scaling it up would lower MSE and FD together); about 1 says no.
Usage: record_mean_calibration.py CORPUS [test|heldout]"""
import sys, glob, numpy as np
from pathlib import Path
sys.path.insert(0, '/work/main')
from common.data.cache import Cache
corpus = sys.argv[1]; where = sys.argv[2] if len(sys.argv) > 2 else 'test'
cache = Cache(Path('/work/runs/quality10') / corpus / 'cache' if where == 'test' else Path('/work/runs/heldout') / corpus / 'cache')
c = np.asarray(cache.stats['motion_mean'], np.float64)[:50]
num = den = 0.0; rows = []
for s in (0, 1, 2):
    for f in sorted(glob.glob(f'/work/runs/mixgain/samples/{where}/{corpus}/seed{s}/*.npz')):
        did = Path(f).stem
        z = np.load(f); g = np.asarray(cache.load(did).motion, np.float64)[:, :, :50]
        m = np.concatenate([z['a'], z['b']]).astype(np.float64)[..., :50].mean(0)   # 16 samples
        m8 = z['a'].astype(np.float64)[..., :50].mean(0)
        T = min(m.shape[1], g.shape[1]); m, m8, g = m[:, :T], m8[:, :T], g[:, :T]
        rows.append((m - c, m8 - c, g - c))
for name, idx in (('mean16', 0), ('mean8', 1)):
    X = np.concatenate([r[idx].reshape(-1, 50) for r in rows]); Y = np.concatenate([r[2].reshape(-1, 50) for r in rows])
    # within-sequence (demeaned per sequence) and level parts
    Xw = np.concatenate([(r[idx] - r[idx].mean(1, keepdims=True)).reshape(-1, 50) for r in rows])
    Yw = np.concatenate([(r[2] - r[2].mean(1, keepdims=True)).reshape(-1, 50) for r in rows])
    a = (X * Y).sum() / (X * X).sum(); aw = (Xw * Yw).sum() / (Xw * Xw).sum()
    print(f'{corpus} {where} {name}: alpha total {a:.3f}, within {aw:.3f}; mse at 1 {((Y-X)**2).mean():.5f}, at alpha {((Y-a*X)**2).mean():.5f}, mse(c) {(Y**2).mean():.5f}')
