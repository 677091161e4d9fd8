"""Evaluate a checkpoint with the benchmarks a config names.

    python tools/test.py CONFIG CHECKPOINT [--out metrics.json]
        [--work-dir DIR] [--cfg-options k=v ...] [--launcher ...]
        [--mlflow-run-name NAME] [--mlflow-tag KEY=VALUE ...] [--debug]

Runs the config's ``test_dataloader`` / ``test_evaluator``, prints the
metrics with their 95% bootstrap intervals as a table, writes them to
``metrics.json`` (in ``eval/<checkpoint name>/`` next to the checkpoint, or
``--out``) and the per-item results to ``per_item.json`` beside it, saves
grids of the outputs to ``eval/<checkpoint name>/grids`` and logs both
to a new MLflow evaluation run named ``<config stem>-eval`` in the
config's experiment (``--mlflow-run-name`` names it instead). The run is
tagged ``checkpoint`` (the path given, unless ``--mlflow-tag checkpoint=
NAME`` says otherwise) and ``checkpoint_path``.
"""
import json
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from _cli import (ArgumentParser, add_mlflow_args,  # noqa: E402
                  apply_mlflow_args, cfg_options_action, check_launcher,
                  exit_as_script, load_config, run_cli)


def parse_args():
    parser = ArgumentParser(description='Evaluate a checkpoint')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out', help='where to write metrics.json')
    parser.add_argument('--work-dir', help='evaluation work dir')
    parser.add_argument(
        '--cfg-options', nargs='+', action=cfg_options_action(),
        help='override config keys')
    parser.add_argument(
        '--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none')
    add_mlflow_args(parser)
    parser.add_argument('--debug', action='store_true')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    return parser.parse_args()


def print_table(metrics: dict) -> None:
    """Metrics with their 95% intervals (``<key>/ci_low``/``ci_high``)."""
    keys = sorted(k for k in metrics
                  if not k.endswith(('/ci_low', '/ci_high')))
    width = max((len(k) for k in keys), default=10)
    print(f"\n{'metric':<{width}}  {'value':>9}  95% interval")
    for key in keys:
        value = metrics[key]
        text = f'{value:9.4f}' if isinstance(value, float) else \
            f'{value!s:>9}'
        low, high = (metrics.get(f'{key}/ci_{s}') for s in ('low', 'high'))
        ci = f'[{low:.4f}, {high:.4f}]' if low is not None else ''
        print(f'{key:<{width}}  {text}  {ci}')


def write_per_item(runner, path: str) -> None:
    """Every metric's per-item results (for paired comparisons of runs,
    tools/analysis/compare_runs.py) as one JSON keyed by metric."""
    evaluator = getattr(runner, 'test_evaluator', None)
    per_metric = {}
    for metric in getattr(evaluator, 'metrics', []):
        results = getattr(metric, 'last_results', None)
        if results is not None:
            per_metric[type(metric).__name__] = results
    with open(path, 'w') as f:
        json.dump(per_metric, f, default=str)


def main():
    args = parse_args()

    def _run():
        from uno.errors import UnoConfigError
        from uno.utils.paths import config_identity
        cfg = load_config(args.config, args.cfg_options)
        missing = [k for k in ('test_dataloader', 'test_cfg',
                               'test_evaluator') if cfg.get(k) is None]
        if missing:
            raise UnoConfigError(
                f'{args.config} has no {", ".join(missing)}: tools/test.py '
                'needs the benchmarks, e.g. _base_ += '
                "['../_base_/benchmarks/shapesworld.py']")
        if not osp.exists(args.checkpoint):  # file or sharded folder
            raise UnoConfigError(f'checkpoint {args.checkpoint} does not '
                                 'exist')
        # next to the checkpoint, one folder per checkpoint: the training
        # run's MLflow id file and other checkpoints' results stay intact
        stem = osp.splitext(osp.basename(args.checkpoint))[0]
        cfg.work_dir = args.work_dir or osp.join(
            osp.dirname(osp.abspath(args.checkpoint)), 'eval', stem)
        cfg.load_from, cfg.resume = args.checkpoint, False
        check_launcher(args.launcher)
        cfg.launcher = args.launcher
        run_name = config_identity(args.config).run_name + '-eval'
        tags = apply_mlflow_args(cfg, args.mlflow_run_name, args.mlflow_tag,
                                 default_run_name=run_name)
        from uno.engine import build_runner
        runner = build_runner(cfg)
        metrics = runner.test()
        metrics = {k: float(v) if hasattr(v, '__float__') else v
                   for k, v in metrics.items()}
        out = args.out or osp.join(cfg.work_dir, 'metrics.json')
        os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
        with open(out, 'w') as f:
            json.dump(dict(checkpoint=args.checkpoint, metrics=metrics), f,
                      indent=2)
        items = osp.join(osp.dirname(osp.abspath(out)), 'per_item.json')
        write_per_item(runner, items)
        from uno.tracking import log_eval_metrics, report_tracking
        log_eval_metrics(runner, metrics, args.checkpoint, tags)
        print_table(metrics)
        print(f'\nmetrics written to {out}, per-item results to {items}')
        report_tracking(runner)

    run_cli(_run, args.debug)


if __name__ == '__main__':
    exit_as_script(main)
