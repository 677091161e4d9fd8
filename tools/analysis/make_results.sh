#!/usr/bin/env bash
# Regenerate the README's results tables and plots (docs/results/) from the
# MLflow runs of the sweeps listed in README.md "Results".
set -euo pipefail
cd "$(dirname "$0")/../.."
R="python tools/analysis/report.py --out docs/results"
M="geneval/overall edit/satisfied edit/psnr"
P=uno_mot-mini_1xb8-iter600_shapes
$R --name main --experiments pretrain sft uno projects/repa_align \
    --checkpoints last iter_600 \
    --metrics geneval/single_object geneval/two_object geneval/counting \
    geneval/colors geneval/position geneval/color_attr geneval/overall \
    edit/satisfied edit/psnr understanding/attr_acc understanding/perplexity
$R --name metaquery_count --experiments ablations/metaquery_count uno \
    --knob model.metaquery.num_queries --metrics $M
$R --name caption_weight --experiments ablations/objective_weights uno \
    --knob objectives.caption.weight --metrics $M \
    --rows ${P}_cap0.0 ${P}_cap0.25 $P ${P}_cap1.0 ${P}_cap2.0
$R --name regression_weight --experiments ablations/objective_weights uno \
    --knob objectives.regression.weight --metrics $M \
    --rows ${P}_reg0.0 ${P}_reg0.25 $P ${P}_reg1.0 ${P}_reg2.0
$R --name regression_loss --experiments ablations/regression_loss uno \
    --knob objectives.regression.loss --metrics $M
$R --name timestep_window --experiments ablations/timestep_window uno \
    --knob objectives.caption.timestep_window --metrics $M
