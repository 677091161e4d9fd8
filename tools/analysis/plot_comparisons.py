"""Forest plot of paired comparisons: each A - B with its 95% interval.

    python tools/analysis/plot_comparisons.py \
        docs/results/ablations/caption_only_vs_sft.json \
        docs/results/ablations/reca_vs_sft.json \
        [--labels caption-only RecA] \
        [--metrics geneval/overall edit/psnr] [--title 'variant − SFT'] \
        --out forest.png

Each file is a ``--json`` output of ``tools/analysis/compare_runs.py``.
One panel per metric, one row per file (the difference as a dot, its
interval as a bar, zero as a vertical line); the table is also printed.
"""
import json
import os.path as osp
import sys
from typing import Dict, List, Sequence

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from _cli import ArgumentParser, fail  # noqa: E402

DEFAULT_METRICS = ('geneval/overall', 'geneval/counting', 'edit/satisfied',
                   'edit/psnr')


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('comparisons', nargs='+',
                        help='compare_runs.py --json files')
    parser.add_argument('--labels', nargs='+',
                        help='one per file (default: the file names)')
    parser.add_argument('--metrics', nargs='+', default=DEFAULT_METRICS)
    parser.add_argument('--title', default='A − B',
                        help="what is compared, e.g. 'variant − SFT'")
    parser.add_argument('--out', required=True, help='the PNG to write')
    return parser.parse_args(argv)


def load(paths: Sequence[str], metrics: Sequence[str]) -> List[Dict]:
    """Each file's ``metric -> {diff, low, high, p_value}``."""
    tables = []
    for path in paths:
        if not osp.isfile(path):
            fail(f'{path} does not exist (write it with compare_runs.py '
                 '--json)')
        with open(path) as f:
            table = json.load(f)
        missing = [m for m in metrics if m not in table]
        if missing:
            fail(f'{path} has no {", ".join(missing)} (it has '
                 f'{", ".join(sorted(table))})')
        tables.append(table)
    return tables


def plot(tables: List[Dict], labels: Sequence[str],
         metrics: Sequence[str], out: str, title: str = 'A − B') -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(
        1, len(metrics), sharey=True, squeeze=False,
        figsize=(3.2 * len(metrics) + 2.0, 0.45 * len(tables) + 1.2))
    rows = list(range(len(tables)))[::-1]  # the first file on top
    for ax, metric in zip(axes[0], metrics):
        for y, table in zip(rows, tables):
            r = table[metric]
            significant = r['low'] > 0 or r['high'] < 0
            ax.errorbar(r['diff'], y,
                        xerr=[[r['diff'] - r['low']],
                              [r['high'] - r['diff']]],
                        fmt='o', capsize=3,
                        color='tab:red' if significant else 'tab:blue')
        ax.axvline(0.0, color='grey', lw=0.8, ls='--')
        ax.set_title(metric, fontsize=9)
        ax.tick_params(labelsize=8)
    axes[0][0].set_yticks(rows)
    axes[0][0].set_yticklabels(labels, fontsize=8)
    fig.suptitle(f'{title}, with 95% interval (red: it excludes 0)',
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv=None) -> None:
    args = parse_args(argv)
    labels = args.labels or [osp.splitext(osp.basename(p))[0]
                             for p in args.comparisons]
    if len(labels) != len(args.comparisons):
        fail(f'--labels: {len(labels)} given for '
             f'{len(args.comparisons)} files')
    tables = load(args.comparisons, args.metrics)
    for label, table in zip(labels, tables):
        cells = [f"{m} {table[m]['diff']:+.3f} [{table[m]['low']:+.3f}, "
                 f"{table[m]['high']:+.3f}]" for m in args.metrics]
        print(f'{label:28s} ' + '  '.join(cells))
    plot(tables, labels, args.metrics, args.out, args.title)
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
