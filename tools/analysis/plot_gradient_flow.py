"""Plot the gradient flow that ``GradientFlowHook`` logged during training.

    python tools/analysis/plot_gradient_flow.py WORK_DIR [--out PNG]
    python tools/analysis/plot_gradient_flow.py --mlflow-uri URI \\
        --run-id RUN_ID [--out PNG]

Reads ``gradflow/<objective>/norm/layer<i>`` and
``gradflow/cos_flow_<objective>/layer<i>`` from the run's local scalars
(every ``WORK_DIR/<timestamp>/vis_data/scalars.json`` of
``LocalVisBackend``, resumed runs included; the last value of a step wins)
or from an MLflow run, and draws four panels:

* the mean gradient norm of each objective on each layer's gen expert
  (bars, log scale; error bars: standard deviation over measurements);
* each objective's norm divided by the flow objective's at the same
  iteration, per layer (mean and standard deviation over measurements);
* every norm over the iterations (colour: objective, line style: layer);
* the mean cosine between the flow gradient and each other objective's
  gradient per layer (error bars: standard deviation).

It also prints the per-layer means as a table. Enable the hook with
``custom_hooks = [..., dict(type='GradientFlowHook', interval=N)]``
(see ``configs/ablations/analysis/uno_mot-mini_gradflow_shapes.py``).
"""
import glob
import json
import os
import os.path as osp
import re
import sys
from collections import defaultdict
from typing import Dict, List, Tuple

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from _cli import ArgumentParser  # noqa: E402

NORM = re.compile(r'^gradflow/(?P<obj>[^/]+)/norm/layer(?P<layer>\d+)$')
COS = re.compile(r'^gradflow/cos_flow_(?P<obj>[^/]+)/layer(?P<layer>\d+)$')

# {kind: {objective: {layer: [(step, value), ...]}}}, kind 'norm' / 'cos'
Series = Dict[str, Dict[str, Dict[int, List[Tuple[int, float]]]]]


def parse_args(argv=None):
    parser = ArgumentParser(
        description='Plot per-layer gradient norms and flow cosines '
        'logged by GradientFlowHook')
    parser.add_argument('work_dir', nargs='?',
                        help='the run\'s work dir (reads scalars.json)')
    parser.add_argument('--mlflow-uri', help='MLflow tracking URI')
    parser.add_argument('--run-id', help='MLflow run id')
    parser.add_argument('--out', help='PNG path (default: '
                        'WORK_DIR/gradient_flow.png)')
    args = parser.parse_args(argv)
    if not args.work_dir and not (args.mlflow_uri and args.run_id):
        parser.error('give WORK_DIR or --mlflow-uri and --run-id')
    if not args.out:
        if not args.work_dir:
            parser.error('--out is required with --mlflow-uri')
        args.out = osp.join(args.work_dir, 'gradient_flow.png')
    return args


def read_local(work_dir: str) -> Dict[int, Dict[str, float]]:
    """``step -> {key: value}`` of every ``gradflow/`` scalar in the
    work dir's ``scalars.json`` files, in time order."""
    files = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data',
                                      'scalars.json')))
    files += sorted(glob.glob(osp.join(work_dir, 'vis_data',
                                       'scalars.json')))
    rows: Dict[int, Dict[str, float]] = defaultdict(dict)
    for path in files:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                row = json.loads(line)
                step = int(row.get('step', 0))
                rows[step].update({k: float(v) for k, v in row.items()
                                   if k.startswith('gradflow/')})
    return {s: r for s, r in rows.items() if r}


def read_mlflow(uri: str, run_id: str) -> Dict[int, Dict[str, float]]:
    """The same from an MLflow run (every step of each metric)."""
    import mlflow

    from uno.tracking.mlflow_backend import bound_http_requests
    bound_http_requests()
    client = mlflow.MlflowClient(uri)
    run = client.get_run(run_id)
    rows: Dict[int, Dict[str, float]] = defaultdict(dict)
    for key in run.data.metrics:
        if not key.startswith('gradflow/'):
            continue
        for m in client.get_metric_history(run_id, key):
            rows[int(m.step)][key] = float(m.value)
    return dict(rows)


def to_series(rows: Dict[int, Dict[str, float]]) -> Series:
    """Group the scalars by kind, objective and layer."""
    series: Series = dict(norm=defaultdict(lambda: defaultdict(list)),
                          cos=defaultdict(lambda: defaultdict(list)))
    for step in sorted(rows):
        for key, value in rows[step].items():
            for kind, pattern in (('norm', NORM), ('cos', COS)):
                m = pattern.match(key)
                if m:
                    series[kind][m['obj']][int(m['layer'])].append(
                        (step, value))
    return series


def mean_std(points: List[Tuple[int, float]]) -> Tuple[float, float]:
    import numpy as np
    values = np.array([v for _, v in points], dtype=np.float64)
    return float(values.mean()), float(values.std())


def flow_name(series: Series) -> str:
    """The flow objective: the one with norms but no cosine of its own
    (``flow`` if present)."""
    names = list(series['norm'])
    if 'flow' in names:
        return 'flow'
    rest = [n for n in names if n not in series['cos']]
    return rest[0] if rest else ''


def step_ratios(series: Series, flow: str
                ) -> Dict[str, Dict[int, List[Tuple[int, float]]]]:
    """``norm / flow norm`` of each non-flow objective, per layer and
    measurement (steps where the flow norm is 0 are left out)."""
    ref = {i: dict(p) for i, p in series['norm'].get(flow, {}).items()}
    out = {}
    for name, per in series['norm'].items():
        if name == flow:
            continue
        out[name] = {i: [(s, v / ref[i][s]) for s, v in p
                         if ref.get(i, {}).get(s, 0) > 0]
                     for i, p in per.items()}
    return out


def summary(series: Series) -> str:
    """Per-layer means over measurements: norm, norm / flow norm (same
    iteration), cosine with flow."""
    flow = flow_name(series)
    ratios = step_ratios(series, flow) if flow else {}
    layers = sorted({i for per in series['norm'].values() for i in per})
    lines = [f"{'objective':<14}{'layer':>6}{'norm':>12}{'/flow':>10}"
             f"{'cos(flow)':>11}{'n':>5}"]
    for name, per in series['norm'].items():
        for i in layers:
            if i not in per:
                continue
            norm, _ = mean_std(per[i])
            ratio = '1' if name == flow else ''
            steps = ratios.get(name, {}).get(i)
            if steps:
                ratio = f'{mean_std(steps)[0]:.3g}'
            cos = series['cos'].get(name, {}).get(i)
            cos = f'{mean_std(cos)[0]:+.3f}' if cos else ''
            lines.append(f'{name:<14}{i:>6}{norm:>12.4g}{ratio:>10}'
                         f'{cos:>11}{len(per[i]):>5}')
    return '\n'.join(lines)


def _bars(ax, data: Dict[str, Dict[int, Tuple[float, float]]],
          layers: List[int], colors: Dict[str, str]) -> None:
    """Grouped bars: one group per layer, one bar per objective."""
    width = 0.8 / max(len(data), 1)
    for k, (name, per) in enumerate(data.items()):
        xs = [i + (k - (len(data) - 1) / 2) * width for i in layers
              if i in per]
        means = [per[i][0] for i in layers if i in per]
        stds = [per[i][1] for i in layers if i in per]
        ax.bar(xs, means, width, yerr=stds, capsize=2, label=name,
               color=colors[name], alpha=0.85)
    ax.set_xticks(layers)
    ax.set_xlabel('decoder layer (gen expert)')


def plot(series: Series, path: str, title: str = '') -> None:
    """The four-panel figure (see the module docstring)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    names = list(series['norm'])
    colors = {n: f'C{k}' for k, n in enumerate(names)}
    layers = sorted({i for per in series['norm'].values() for i in per})
    flow = flow_name(series)
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    ax = axes[0, 0]
    _bars(ax, {n: {i: mean_std(p) for i, p in per.items()}
               for n, per in series['norm'].items()}, layers, colors)
    ax.set_yscale('log')
    ax.set_ylabel('|weight * grad| on the layer\'s gen params')
    ax.set_title('gradient norm per layer (mean over measurements)',
                 fontsize=9)
    ax.legend(fontsize=8)
    ax = axes[0, 1]
    if flow:
        _bars(ax, {n: {i: mean_std(p) for i, p in per.items() if p}
                   for n, per in step_ratios(series, flow).items()},
              layers, colors)
        ax.axhline(1.0, color='k', linewidth=0.8, linestyle='--')
        ax.set_yscale('log')
        ax.legend(fontsize=8)
    ax.set_ylabel(f'norm / norm of {flow or "flow"} (same iteration)')
    ax.set_title('norm relative to the flow gradient (mean over '
                 'measurements)', fontsize=9)
    ax = axes[1, 0]
    styles = ['-', '--', ':', '-.']
    for name, per in series['norm'].items():
        for i in sorted(per):
            steps, values = zip(*per[i])
            ax.plot(steps, values, color=colors[name],
                    linestyle=styles[(i - 1) % len(styles)], marker='.',
                    label=f'{name} L{i}')
    ax.set_yscale('log')
    ax.set_xlabel('iteration')
    ax.set_ylabel('gradient norm')
    ax.set_title('norms over training (line style: layer)', fontsize=9)
    ax.legend(fontsize=6, ncol=max(1, len(names)))
    ax = axes[1, 1]
    top = 0.25  # small cosines stay readable; the axis grows to +-1
    if series['cos']:
        cos = {n: {i: mean_std(p) for i, p in per.items()}
               for n, per in series['cos'].items()}
        _bars(ax, cos, layers, colors)
        ax.legend(fontsize=8)
        top = max([top] + [abs(m) + s for per in cos.values()
                           for m, s in per.values()])
    ax.axhline(0.0, color='k', linewidth=0.8)
    lim = min(1.05, 1.15 * top)
    ax.set_ylim(-lim, lim)
    ax.set_ylabel(f'cos(grad {flow or "flow"}, grad objective)')
    ax.set_title('cosine with the flow gradient per layer', fontsize=9)
    for a in axes.flat:
        a.grid(alpha=0.3)
    fig.suptitle(title or 'gradient flow into the generation expert',
                 fontsize=10)
    fig.tight_layout()
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.mlflow_uri and args.run_id:
        from mlflow.exceptions import MlflowException
        try:
            rows = read_mlflow(args.mlflow_uri, args.run_id)
        except MlflowException as e:  # unreachable store, unknown run
            print(f'error: MLflow {args.mlflow_uri} run {args.run_id}: '
                  f"{' '.join(str(e).split())[:400]}", file=sys.stderr)
            return 2
        source = f'MLflow run {args.run_id}'
    else:
        if not osp.isdir(args.work_dir):
            print(f'error: {args.work_dir} is not a directory',
                  file=sys.stderr)
            return 2
        rows = read_local(args.work_dir)
        source = args.work_dir
    series = to_series(rows)
    if not series['norm']:
        print(f'error: no gradflow/ scalars in {source}; add '
              "dict(type='GradientFlowHook', interval=N) to custom_hooks",
              file=sys.stderr)
        return 1
    print(f'{source}: {len(rows)} measurements')
    print(summary(series))
    plot(series, args.out, f'gradient flow into the gen expert: {source} '
         f'({len(rows)} measurements)')
    print(f'plot written to {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
