#!/bin/bash
# A record, not a tool (paths are those of the run, 2026-12-05; issue 19): the dropout probe, run from the repository root.
# probe: dropout DO (tiny config otherwise, as shipped now: own noise 0.2, partner 0) on corpus seed; sample both modes
do=$1; corpus=$2; seed=$3
cd /work/main
R=/work/runs/quality10/$corpus; S=$R/seed$seed; o=/work/runs/tn3/$corpus/seed$seed/do$do
mkdir -p $o
export OMP_NUM_THREADS=1
t0=$(date +%s)
[ -f $o/stage2/gpt.pt ] || /work/main/.venv/bin/python stage2_gpt/train.py --config configs/stage2_gpt_tiny.yaml cache=$R/cache train.seed=$seed train.progress=false tokenizer=$S/stage1/tokenizer.pt tokens=seed$seed out_dir=$o/stage2 model.dropout=$do > $o/train.log 2>&1 || { echo FAIL; exit 1; }
for mode in dyad listener; do
  p=$o/model_$mode
  [ -f $p/.done ] || /work/main/.venv/bin/python scripts/sample.py --gpt $o/stage2/gpt.pt --tokenizer $S/stage1/tokenizer.pt --cache $R/cache --split test --mode $mode --out $p --seed $seed --quiet --no-plot > $o/sample_$mode.log 2>&1 && touch $p/.done || { echo FAIL; exit 1; }
done
echo "do$do $corpus $seed done in $(( $(date +%s) - t0 )) s; $(tail -1 $o/train.log | cut -c1-160)"
