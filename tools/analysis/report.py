"""Tabulate (and plot) evaluation metrics of MLflow runs over seeds.

    python tools/analysis/report.py --experiments NAME [...]
        [--tracking-uri URI] [--metrics M ...] [--rows CONFIG ...]
        [--checkpoints NAME ...] [--knob DOTTED.KEY] [--out DIR]
        [--name NAME]

Reads the evaluation runs (runs tagged ``checkpoint``, as logged by
tools/test.py and tools/sweep.py) of the experiments, groups them by
config (tag ``config``, else the stem of tag ``config_path``) and
checkpoint (tag ``checkpoint``; a path counts by its file stem), and
prints a Markdown table of each metric as ``mean ± std (sample std,
ddof=1)`` over seeds (tag ``seed``, else param ``randomness.seed``; of
several runs of one seed the latest counts). ``--metrics`` defaults to
every ``geneval/*``, ``edit/*`` and ``understanding/*`` metric found, less
the counts (``num_*``). Rows follow ``--rows`` (config names; others are
left out), else the knob, else the config name.

``--knob model.metaquery.num_queries`` adds the knob's value per row (the
run's param, else its logged ``config.py``, else the file of tag
``config_path``) and, with ``--out``, a figure with one panel per metric:
mean with std error bars against the knob, one line per checkpoint.
``--out DIR`` writes ``DIR/<name>.md`` (and ``DIR/<name>.png``).

The store defaults to ``MLFLOW_TRACKING_URI``, else
``sqlite:///work_dirs/mlflow.db`` (training's default from the repo root).
"""
import math
import os
import os.path as osp
import re
import sys
import tempfile
from collections import defaultdict
from typing import Dict, List, Optional

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from _cli import ArgumentParser  # noqa: E402

os.environ.setdefault('MLFLOW_DISABLE_TELEMETRY', 'true')
os.environ.setdefault('MLFLOW_LOGGING_LEVEL', 'WARNING')
os.environ.setdefault('MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR', 'false')

PREFIXES = ('geneval/', 'edit/', 'understanding/')


class ReportError(Exception):
    """A problem reported as one line and exit status 2."""


def parse_args(argv=None):
    parser = ArgumentParser(
        description='Mean ± std over seeds of evaluation runs')
    parser.add_argument('--experiments', nargs='+', required=True,
                        metavar='NAME', help='e.g. ablations/metaquery_count')
    parser.add_argument('--tracking-uri', help='MLflow store (default: '
                        'MLFLOW_TRACKING_URI, else work_dirs/mlflow.db)')
    parser.add_argument('--metrics', nargs='+', metavar='NAME',
                        help='default: geneval/*, edit/*, understanding/*')
    parser.add_argument('--rows', nargs='+', metavar='CONFIG',
                        help='config names in the order wanted')
    parser.add_argument('--checkpoints', nargs='+', metavar='NAME',
                        help="only these checkpoints, e.g. last iter_300")
    parser.add_argument('--knob', metavar='DOTTED.KEY',
                        help='config key to plot against, e.g. '
                        'objectives.caption.weight')
    parser.add_argument('--out', metavar='DIR',
                        help='write <name>.md (and <name>.png) here')
    parser.add_argument('--name', help='file name stem (default: from '
                        'the experiments)')
    return parser.parse_args(argv)


def default_uri() -> str:
    """``MLFLOW_TRACKING_URI``, else the sqlite store in work_dirs/."""
    return os.environ.get('MLFLOW_TRACKING_URI') or (
        'sqlite:///' + osp.abspath(osp.join('work_dirs', 'mlflow.db')))


def open_store(uri: str):
    """An ``MlflowClient`` of ``uri``; a missing sqlite file is an error
    (MLflow would create an empty store)."""
    path = uri[len('sqlite:///'):].split('?')[0]
    if uri.startswith('sqlite:///') and not osp.isfile(path):
        raise ReportError(f'no MLflow store at {path}; pass --tracking-uri')
    from mlflow import MlflowClient

    from uno.tracking.mlflow_backend import bound_http_requests
    bound_http_requests()
    return MlflowClient(tracking_uri=uri)


def load_runs(client, experiments: List[str]) -> list:
    """Every run of the named experiments."""
    known = {e.name: e for e in client.search_experiments()}
    missing = [n for n in experiments if n not in known]
    if missing:
        raise ReportError(f'no experiment {", ".join(missing)} in the store; '
                          f'experiments: {", ".join(sorted(known))}')
    ids = [known[n].experiment_id for n in experiments]
    runs, token = [], None
    while True:
        page = client.search_runs(ids, max_results=1000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


def checkpoint_name(value: str) -> str:
    """``last`` stays; a path becomes its stem (``iter_300``)."""
    if '/' in value or value.endswith('.pth'):
        return osp.splitext(osp.basename(osp.normpath(value)))[0]
    return value


def eval_records(runs: list) -> List[dict]:
    """One record per (config, checkpoint, seed): the latest such run."""
    latest = {}
    for run in runs:
        tags = run.data.tags
        if 'checkpoint' not in tags or not run.data.metrics:
            continue
        config = tags.get('config') or (osp.splitext(osp.basename(
            tags['config_path']))[0] if tags.get('config_path') else
            run.info.run_name)
        seed = tags.get('seed', run.data.params.get('randomness.seed', '?'))
        key = (config, checkpoint_name(tags['checkpoint']), seed)
        if key not in latest or run.info.start_time > \
                latest[key]['run'].info.start_time:
            latest[key] = dict(config=key[0], checkpoint=key[1], seed=seed,
                               run=run, metrics=dict(run.data.metrics))
    return list(latest.values())


def default_metrics(records: List[dict]) -> List[str]:
    """The benchmark metrics found, by prefix then name, without counts."""
    names = {m for r in records for m in r['metrics']
             if m.startswith(PREFIXES)
             and not m.rsplit('/', 1)[-1].startswith('num_')}
    return sorted(names, key=lambda m: (
        [m.startswith(p) for p in PREFIXES].index(True), m))


_MISSING = object()


def _lookup(tree, key: str):
    for part in key.split('.'):
        if not isinstance(tree, dict) or part not in tree:
            return _MISSING
        tree = tree[part]
    return tree


def knob_value(client, run, key: str, cache: dict) -> Optional[str]:
    """The knob's value in ``run``: param, else logged ``config.py``, else
    the file of tag ``config_path``; None if none has it."""
    if key in run.data.params:
        return run.data.params[key]
    from mmengine.config import Config
    sources = [('artifact', run.info.run_id),
               ('file', run.data.tags.get('config_path'))]
    for kind, ref in sources:
        if not ref:
            continue
        if (kind, ref) not in cache:
            try:
                if kind == 'artifact':
                    with tempfile.TemporaryDirectory() as tmp:
                        path = client.download_artifacts(ref, 'config.py',
                                                         tmp)
                        cache[kind, ref] = Config.fromfile(path).to_dict()
                else:
                    cache[kind, ref] = Config.fromfile(ref).to_dict()
            except Exception:
                cache[kind, ref] = None
        value = _lookup(cache[kind, ref], key) if cache[kind, ref] \
            else _MISSING
        if value is not _MISSING:  # a key set to None reads 'None'
            return str(value)
    return None


def _as_float(text) -> Optional[float]:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def mean_std(values: List[float]):
    """Mean and sample std (ddof=1; nan for one value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan
    return mean, math.sqrt(sum((v - mean)**2 for v in values) / (n - 1))


def _ckpt_key(name: str):
    match = re.fullmatch(r'(iter|epoch)_(\d+)', name)
    return (1, '', 0) if name == 'last' else (
        0, match.group(1), int(match.group(2))) if match else (0, name, 0)


def build_rows(records, metrics, order=None, knob=None) -> List[dict]:
    """Group records by (config, checkpoint) and summarise each metric."""
    groups = defaultdict(list)
    for rec in records:
        groups[rec['config'], rec['checkpoint']].append(rec)
    rows = []
    for (config, ckpt), recs in groups.items():
        stats = {}
        for m in metrics:
            vals = [r['metrics'][m] for r in recs if m in r['metrics']]
            stats[m] = (*mean_std(vals), len(vals)) if vals else None
        knobs = sorted({r.get('knob') for r in recs} - {None})
        rows.append(dict(config=config, checkpoint=ckpt, n=len(recs),
                         stats=stats, knob=', '.join(knobs) or None))
    if order:
        unknown = [c for c in order if c not in {r['config'] for r in rows}]
        if unknown:
            raise ReportError(f'--rows {", ".join(unknown)}: no such config; '
                              'configs: ' + ', '.join(
                                  sorted({r['config'] for r in rows})))
        rows = [r for r in rows if r['config'] in order]
        rows.sort(key=lambda r: (order.index(r['config']),
                                 _ckpt_key(r['checkpoint'])))
    elif knob:
        numeric = all(_as_float(r['knob']) is not None for r in rows)
        rows.sort(key=lambda r: (
            _as_float(r['knob']) if numeric else str(r['knob']),
            r['config'], _ckpt_key(r['checkpoint'])))
    else:
        rows.sort(key=lambda r: (r['config'], _ckpt_key(r['checkpoint'])))
    return rows


def _cell(stat, n: int) -> str:
    if stat is None:
        return '–'
    mean, std, count = stat
    text = f'{mean:.4f}' if math.isnan(std) else f'{mean:.4f} ± {std:.4f}'
    return text + (f' (n={count})' if count != n else '')


def markdown(rows: List[dict], metrics: List[str], knob=None) -> str:
    """The Markdown table of ``rows``."""
    show_ckpt = len({r['checkpoint'] for r in rows}) > 1
    head = ['config'] + (['checkpoint'] if show_ckpt else []) + (
        [knob] if knob else []) + ['n'] + metrics
    align = ['---'] * (len(head) - len(metrics) - 1) + ['---:'] * (
        len(metrics) + 1)
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '|'.join(align) + '|']
    for r in rows:
        cells = [r['config']] + ([r['checkpoint']] if show_ckpt else []) + (
            [r['knob'] or '?'] if knob else []) + [str(r['n'])] + [
                _cell(r['stats'][m], r['n']) for m in metrics]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'


def plot(rows: List[dict], metrics: List[str], knob: str, path: str) -> None:
    """One panel per metric: mean ± std against the knob, a line per
    checkpoint; a non-numeric knob is spread evenly in row order."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    labels = list(dict.fromkeys(str(r['knob']) for r in rows))
    numeric = all(_as_float(k) is not None for k in labels)
    ncols = min(3, len(metrics))
    nrows = math.ceil(len(metrics) / ncols)
    fig, axes = plt.subplots(nrows, ncols, squeeze=False,
                             figsize=(4.2 * ncols, 3.2 * nrows))
    ckpts = sorted({r['checkpoint'] for r in rows}, key=_ckpt_key)
    for ax, metric in zip(axes.flat, metrics):
        for ckpt in ckpts:
            pts = [(_as_float(r['knob']) if numeric else labels.index(
                str(r['knob'])), r['stats'][metric]) for r in rows
                if r['checkpoint'] == ckpt and r['stats'][metric]]
            pts.sort(key=lambda p: p[0])
            if not pts:
                continue
            xs = [p[0] for p in pts]
            ys = [p[1][0] for p in pts]
            errs = [0.0 if math.isnan(p[1][1]) else p[1][1] for p in pts]
            ax.errorbar(xs, ys, yerr=errs, marker='o', capsize=3,
                        label=ckpt)
        ax.set_title(metric, fontsize=10)
        ax.set_xlabel(knob, fontsize=8)
        if not numeric:
            ax.set_xticks(range(len(labels)), labels, fontsize=7)
        ax.grid(alpha=0.3)
        if len(ckpts) > 1:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(metrics):]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def report(args) -> Dict[str, str]:
    """Print the table; return ``{'md': path, 'png': path}`` written."""
    uri = args.tracking_uri or default_uri()
    client = open_store(uri)
    records = eval_records(load_runs(client, args.experiments))
    if args.checkpoints:
        records = [r for r in records if r['checkpoint'] in args.checkpoints]
    if not records:
        names = sorted(e.name for e in client.search_experiments())
        raise ReportError(
            'no evaluation runs (tag checkpoint) in '
            f'{", ".join(args.experiments)} of {uri}; experiments: '
            f'{", ".join(names)}')
    metrics = args.metrics or default_metrics(records)
    found = {m for r in records for m in r['metrics']}
    unknown = [m for m in metrics if m not in found]
    if unknown or not metrics:
        raise ReportError(f'no run logged {", ".join(unknown) or "any"} '
                          'benchmark metric; metrics: '
                          f'{", ".join(default_metrics(records))}')
    if args.knob:
        cache = {}
        for rec in records:
            rec['knob'] = knob_value(client, rec['run'], args.knob, cache)
    rows = build_rows(records, metrics, args.rows, args.knob)
    table = markdown(rows, metrics, args.knob)
    print(table, end='')
    written = {}
    if args.out:
        name = args.name or '_'.join(
            e.rstrip('/').split('/')[-1] for e in args.experiments)
        os.makedirs(args.out, exist_ok=True)
        written['md'] = osp.join(args.out, f'{name}.md')
        with open(written['md'], 'w') as f:
            f.write(f'# {", ".join(args.experiments)}\n\nmean ± std '
                    '(ddof=1) over n seeds; store ' + uri + '\n\n' + table)
        if args.knob:
            written['png'] = osp.join(args.out, f'{name}.png')
            plot(rows, metrics, args.knob, written['png'])
        for path in written.values():
            print(f'wrote {path}', file=sys.stderr)
    elif args.knob:
        print('pass --out DIR to save the plot', file=sys.stderr)
    return written


def main(argv=None) -> int:
    args = parse_args(argv)
    from mlflow.exceptions import MlflowException
    try:
        report(args)
    except ReportError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    except MlflowException as e:  # the store: unreachable, refused
        message = ' '.join(str(e).split())[:400]
        print(f'error: MLflow store {args.tracking_uri or default_uri()}: '
              f'{message}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
