"""Paired comparison of two models over seeds and prompts: A - B.

    python tools/analysis/compare_runs.py \
        --a work_dirs/uno/s{0..4}/eval/iter_600 \
        --b work_dirs/sft/s{0..4}/eval/iter_600 \
        [--names UNO SFT] [--out comparison.md] [--json comparison.json]

Each folder is an evaluation folder of ``tools/test.py`` (it holds
``per_item.json``), one per training seed; ``--a`` and ``--b`` are paired
in the order given (same seed, same benchmark prompts). For GenEval overall
and per tag, edit satisfied and PSNR and the understanding accuracies it
prints A, B, A - B with its 95% interval (resampling seeds and, within
tags or edit kinds, prompts) and a two-sided sign-flip p-value over
prompts (:func:`uno.evaluation.stats.paired_difference`).
"""
import json
import os.path as osp
import sys
from typing import Dict, List, Tuple

import numpy as np

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(
    osp.abspath(__file__)))))
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from _cli import ArgumentParser, fail  # noqa: E402

UNDERSTANDING = ('shape_acc', 'color_acc', 'size_acc', 'object_count_acc',
                 'relation_acc', 'exact')


def load(folder: str) -> dict:
    path = osp.join(folder, 'per_item.json')
    if not osp.isfile(path):
        fail(f'{path} does not exist (run tools/test.py on the '
             'checkpoint first)')
    with open(path) as f:
        return json.load(f)


def _matrix(runs: List[dict], metric: str, key: str,
            stratum: str = None) -> Tuple[np.ndarray, list]:
    """``(S, P)`` scores sorted by item index, and the strata."""
    rows, strata, order = [], None, None
    for run in runs:
        items = sorted(run.get(metric, []), key=lambda r: r['index'])
        index = [r['index'] for r in items]
        if order is None:
            order = index
        elif index != order:
            fail(f'{metric} items differ between runs (another benchmark '
                 'size or seed?)')
        rows.append([np.nan if r.get(key) is None else float(r[key])
                     for r in items])
        if stratum:
            strata = [r[stratum] for r in items]
    return np.asarray(rows, dtype=float), strata


def rows_of(a_runs, b_runs) -> Dict[str, tuple]:
    """``name -> (A matrix, B matrix, strata)`` of every compared metric.
    """
    specs = [('geneval/overall', 'GenEvalMetric', 'correct', 'tag', None)]
    tags = sorted({r['tag'] for r in a_runs[0].get('GenEvalMetric', [])})
    specs += [(f'geneval/{t}', 'GenEvalMetric', 'correct', 'tag', t)
              for t in tags]
    specs += [('edit/satisfied', 'EditMetric', 'satisfied', 'kind', None),
              ('edit/psnr', 'EditMetric', 'psnr', 'kind', None)]
    specs += [(f'understanding/{k}', 'UnderstandingMetric', k, None, None)
              for k in UNDERSTANDING]
    out = {}
    for name, metric, key, stratum, only in specs:
        if not a_runs[0].get(metric):
            continue
        a, strata = _matrix(a_runs, metric, key, stratum)
        b, _ = _matrix(b_runs, metric, key, stratum)
        if only is not None:
            keep = np.asarray([s == only for s in strata])
            a, b, strata = a[:, keep], b[:, keep], None
        if np.all(np.isnan(a)):
            continue
        out[name] = (a, b, strata)
    return out


def compare(a_runs, b_runs) -> Dict[str, dict]:
    from uno.evaluation.stats import paired_difference, stratified_mean
    table = {}
    for name, (a, b, strata) in rows_of(a_runs, b_runs).items():
        res = paired_difference(a, b, strata)
        res['a'] = float(np.mean([stratified_mean(r, strata) for r in a]))
        res['b'] = float(np.mean([stratified_mean(r, strata) for r in b]))
        res['num_items'] = int(a.shape[1])
        table[name] = res
    return table


def markdown(table: Dict[str, dict], names, seeds: int) -> str:
    a, b = names
    lines = [f'{a} vs {b}: {seeds} paired seeds; interval = 95% bootstrap '
             'over seeds and prompts; p = sign-flip test over prompts', '',
             f'| metric | items | {a} | {b} | {a} − {b} | 95% interval '
             '| p |', '|---|---|---|---|---|---|---|']
    for name, r in table.items():
        lines.append(
            f"| {name} | {r['num_items']} | {r['a']:.4f} | {r['b']:.4f} | "
            f"{r['diff']:+.4f} | [{r['low']:+.4f}, {r['high']:+.4f}] | "
            f"{r['p_value']:.3g} |")
    return '\n'.join(lines)


def main():
    parser = ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--a', nargs='+', required=True,
                        help='eval folders of model A, one per seed')
    parser.add_argument('--b', nargs='+', required=True,
                        help='eval folders of model B, same seeds, order')
    parser.add_argument('--names', nargs=2, default=('A', 'B'))
    parser.add_argument('--out', help='write the Markdown table here')
    parser.add_argument('--json', help='write the figures here')
    args = parser.parse_args()
    if len(args.a) != len(args.b):
        fail(f'{len(args.a)} folders for --a but {len(args.b)} for --b; '
             'pair them by seed')
    a_runs, b_runs = [load(f) for f in args.a], [load(f) for f in args.b]
    table = compare(a_runs, b_runs)
    text = markdown(table, args.names, len(args.a))
    print(text)
    if args.out:
        with open(args.out, 'w') as f:
            f.write(text + '\n')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(table, f, indent=2)


if __name__ == '__main__':
    main()
