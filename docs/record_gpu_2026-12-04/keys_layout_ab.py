"""Record (2026-12-04, fifth session; docs/BENCHMARKS.md "Fifth session"): the captured step's attention on the ring
cache, several ways, in one process, each measured with the benches of scripts/gpu_check.py (the paper-size
untrained GPT of a ``gpu_check.py --generation-only`` folder). Run on an H200 as

    python docs/record_gpu_2026-12-04/keys_layout_ab.py GC_FOLDER OUT.json        # VARIANTS=new,old,new2,old2,tf32

  new / new2 : keys laid out (B, H, dh, W) at every row count (the code does it from 512 rows), values (B, H, W, dh):
               call 1's keys_t. (Call 2's new had the values (dh, W) too: the zeros_like bug in BENCHMARKS.)
  old / old2 : keys laid out (B, H, W, dh) (the code before)
  sdpa       : F.scaled_dot_product_attention with the empty-slot mask (call 1, as VARIANTS=old,new,sdpa,tf32
               under the names base, keys_t, sdpa, tf32)
  tf32       : new with TF32 products (information only; not the default)
Per variant: replay GPU ms (CUDA events) at 128 / 512 samples, generate ms/step and frames/s, 128 dialogs,
streaming median / p99, one dialog, and the codes' agreement with the first variant (512 samples, same seed)."""
import sys, os, time, json
import numpy as np, torch, torch.nn.functional as F
sys.path.insert(0, '.')
from common.data.cache import Cache
from stage2_gpt.generate import Generator, Sampling
from stage2_gpt import speed as B, decode_step as DS
GC, OUTF = sys.argv[1], sys.argv[2]
DEV = os.environ.get('DEV', 'cuda'); CUDA = DEV != 'cpu'
NS = [int(x) for x in os.environ.get('NS', '128,512').split(',')]
SECS = float(os.environ.get('SECS', '20'))
VARIANTS = os.environ.get('VARIANTS', 'new,old,new2,old2,tf32').split(',')
sync = torch.cuda.synchronize if CUDA else (lambda: None)

orig_rows, orig_attend = DS.TRANSPOSED_KEYS_ROWS, DS._attend


def attend_sdpa(attn, q, k, v, groups, empty=None):
    if empty is None:
        return orig_attend(attn, q, k, v, groups, empty)
    scale = attn.attend.scale if attn.attend.scale is not None else q.shape[-1] ** -0.5
    o = F.scaled_dot_product_attention(q, k, v, attn_mask=(~empty)[None, None, None], scale=scale)
    return DS.group_linear(attn.to_out, o.transpose(1, 2).flatten(2), groups)


def use(variant):
    DS.TRANSPOSED_KEYS_ROWS, DS._attend = orig_rows, orig_attend
    if CUDA:
        torch.backends.cuda.matmul.allow_tf32 = variant.startswith('tf32')
    if variant.startswith(('new', 'tf32')):
        DS.TRANSPOSED_KEYS_ROWS = 0
    if variant.startswith(('old', 'sdpa')):
        DS.TRANSPOSED_KEYS_ROWS = 10 ** 9
    if variant == 'sdpa':
        DS._attend = attend_sdpa


gen = Generator.load(f'{GC}/stage2_untrained/gpt.pt', f'{GC}/stage1/tokenizer.pt', DEV, cuda_graph=True)
c = Cache(f'{GC}/cache')
audio = np.array(c.load(c.dialogs()[0]['id']).audio, np.float32)
n = int(SECS * gen.fps)
a = B.tile_audio(audio, n)
out, ref_codes = {"model": B.describe(gen), "seconds": SECS}, {}
for v in VARIANTS:
    use(v)
    r = out[v] = {}
    t0 = time.perf_counter()
    try:
        for N in NS:
            s = Sampling(seed=0)
            gen.generate(a[:, :16], sampling=s, num_samples=N); sync()
            st = gen.new_state(0, N)
            au = gen.normalize_audio(a[:, :40 * gen.d])[None]
            for k in range(5):
                gen.step(st, au[:, :, k * gen.d:(k + 1) * gen.d], None, s)
            sync()
            if CUDA:
                e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                e0.record()
                for _ in range(50):
                    st.graph.captured.graph.replay()
                e1.record(); sync()
                r[f'replay_ms_{N}'] = e0.elapsed_time(e1) / 50
            B.reset_peak(gen.device)
            t = time.perf_counter()
            g = gen.generate(a, sampling=s, num_samples=N); sync()
            el = time.perf_counter() - t
            r[f'samples_{N}'] = {"frames_per_s": N * n / el, "ms_per_step": 1e3 * el / -(-n // gen.d),
                                 "peak_device_mb": B.peak_device_mb(gen.device)}
            if N == max(NS):
                if v == VARIANTS[0]:
                    ref_codes[N] = g.codes
                    t = time.perf_counter()
                    gen.generate(a, sampling=Sampling(seed=0, mean_anchor_s=None), num_samples=N); sync()
                    r[f'samples_{N}_no_anchor_ms_per_step'] = 1e3 * (time.perf_counter() - t) / -(-n // gen.d)
                elif N in ref_codes:
                    same = (g.codes == ref_codes[N]).all(axis=(0, 2))
                    r['codes_equal_steps_vs_first'] = [int(same.sum()), int(same.size)]
                    r['codes_equal_fraction_vs_first'] = float((g.codes == ref_codes[N]).mean())
        rows = B.bench_batches(gen, audio, batches=(128,), seconds=SECS)
        r['dialogs_128'] = next(x for x in rows if x['sequences'] == 'dialogs')
        stm = B.bench_streaming(gen, a, skip=5)
        r['streaming'] = {k: stm[k] for k in ("steps", "ms_per_step_median", "ms_per_step_p99", "ms_per_step_max")}
        o1 = B.bench_batches(gen, audio, batches=(1,), seconds=SECS)
        r['one_dialog_ms_per_step'] = o1[0]['ms_per_step']
    except Exception as e:  # a variant that fails to capture is reported, not fatal
        r['error'] = repr(e)[:500]
    r['seconds'] = time.perf_counter() - t0
    print(v, json.dumps(r), flush=True)
    json.dump(out, open(OUTF, 'w'), indent=1)
use('')
