"""Learned anchor baselines: the DualTalk-class regressor (non-causal and causal; given the partner's true motion
or, in the dyad protocol, audio only), trained by the same loop as
the two stages and sampled into the prediction layout (docs/BASELINES.md, "Learned baselines").

    python baselines/train.py --config configs/baseline_regressor_tiny.yaml cache=CACHE out_dir=RUN
    python scripts/baselines.py --cache CACHE --out OUT --regressor RUN/regressor.pt
"""
