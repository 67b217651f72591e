#!/bin/bash
# A record, not a tool (paths are those of the run, 2026-12-05; issue 19). The token-noise split: run 13's tokenizers and
# caches (/work/runs/quality10), the tiny GPT retrained per corpus and seed with model.token_noise=OWN and
# model.partner_token_noise=PARTNER (the bench's stage-2 command plus the two keys), then sampled in both modes with
# scripts/sample.py's defaults; held-out dialogs of new persons (record_sample_count_heldout.py's corpora) sampled with
# the base GPT (listener mode; its dyad files are record_dyad_temperature_score.py's t1.35_sm0.02) and the kept variant.
# Usage: record_token_noise_split.sh chain TAG OWN PARTNER CORPUS SEED | heldout CORPUS SEED
set -e
PY=/work/main/.venv/bin/python
export OMP_NUM_THREADS=1
cd "$(dirname "$0")/../.."
if [ "$1" = chain ]; then
  tag=$2; own=$3; partner=$4; corpus=$5; seed=$6
  R=/work/runs/quality10/$corpus; S=$R/seed$seed; o=/work/runs/tn3/$corpus/seed$seed/tn$tag
  mkdir -p $o
  [ -f $o/stage2/gpt.pt ] || $PY stage2_gpt/train.py --config configs/stage2_gpt_tiny.yaml cache=$R/cache train.seed=$seed \
    train.progress=false tokenizer=$S/stage1/tokenizer.pt tokens=seed$seed out_dir=$o/stage2 model.token_noise=$own \
    model.partner_token_noise=$partner > $o/train.log 2>&1
  for mode in dyad listener; do
    p=$o/model_$mode
    [ -f $p/.done ] || { $PY scripts/sample.py --gpt $o/stage2/gpt.pt --tokenizer $S/stage1/tokenizer.pt --cache $R/cache \
      --split test --mode $mode --out $p --seed $seed --quiet --no-plot > $o/sample_$mode.log 2>&1; touch $p/.done; }
  done
elif [ "$1" = heldout ]; then
  corpus=$2; seed=$3
  B=/work/runs/quality10/$corpus/seed$seed; H=/work/runs/heldout/$corpus; o=/work/runs/tn3_ho/$corpus/seed$seed
  g=/work/runs/tn3/$corpus/seed$seed/tns0.2p0/stage2/gpt.pt
  mkdir -p $o
  for job in "base listener $B/stage2/gpt.pt" "s0.2p0 listener $g" "s0.2p0 dyad $g"; do
    set -- $job
    p=$o/$1_$2
    [ -f $p/.done ] || { $PY scripts/sample.py --gpt $3 --tokenizer $B/stage1/tokenizer.pt --cache $H/cache --split test \
      --mode $2 --out $p --seed $seed --quiet --no-plot > $p.log 2>&1; touch $p/.done; }
  done
fi
