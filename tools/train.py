"""Train a model from a uno config.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [PATH]]
        [--cfg-options k=v ...] [--launcher {none,pytorch,slurm,mpi}]
        [--seed N] [--mlflow-run-name NAME] [--mlflow-tag KEY=VALUE ...]
        [--debug]

The work dir defaults to ``work_dirs/<config path below configs/>``;
``--resume`` alone continues from the latest checkpoint there, ``--resume
PATH`` from that checkpoint. Metrics go to the local log and to MLflow
(the run and its tracking URI are printed at start and end), with the
training wall-clock (``train/wall_clock_s``) and mean iteration time
(``train/mean_iter_time_s``) of this process logged at the last step.
``--mlflow-run-name`` / ``--mlflow-tag`` name and tag the MLflow run (a
resumed run keeps its id and first name).
"""
import os.path as osp
import sys
import time

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from _cli import (ArgumentParser, add_mlflow_args,  # noqa: E402
                  apply_mlflow_args, cfg_options_action, check_launcher,
                  exit_as_script, load_config, run_cli)


def parse_args():
    parser = ArgumentParser(description='Train with a uno config')
    parser.add_argument('config', help='config file')
    parser.add_argument('--work-dir', help='where logs and checkpoints go')
    parser.add_argument(
        '--resume',
        nargs='?',
        const='auto',
        default=None,
        metavar='PATH',
        help='resume from PATH, or from the latest checkpoint of the work '
        'dir when no PATH is given')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=cfg_options_action(),
        help='override config keys, e.g. objectives.caption.weight=0')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher (tools/dist_train.sh sets pytorch)')
    parser.add_argument('--seed', type=int, help='random seed')
    add_mlflow_args(parser)
    parser.add_argument(
        '--debug', action='store_true', help='show full tracebacks')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    return parser.parse_args()


def merge_args(cfg, args):
    """CLI > config > defaults, for the run-level settings."""
    from uno.utils.paths import default_work_dir
    if args.work_dir:
        cfg.work_dir = args.work_dir
    elif not cfg.get('work_dir'):
        cfg.work_dir = default_work_dir(args.config)
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume:
        if not osp.exists(args.resume):  # a file, or a sharded folder
            from uno.errors import UnoConfigError
            raise UnoConfigError(f'--resume {args.resume}: no such file')
        cfg.resume, cfg.load_from = True, args.resume
    check_launcher(args.launcher)
    cfg.launcher = args.launcher
    if args.seed is not None:
        cfg.setdefault('randomness', {})
        cfg.randomness['seed'] = args.seed
    return cfg


def log_train_timing(runner, seconds: float) -> None:
    """Log the wall-clock of ``runner.train()`` and the mean iteration
    time (IterTimerHook's ``train/time``) of this process to every vis
    backend: the local scalars first, so a replay restores them after an
    MLflow outage, then MLflow."""
    from mmengine.logging import print_log
    metrics = {'train/wall_clock_s': seconds}
    buffer = runner.message_hub.log_scalars.get('train/time')
    if buffer is not None and len(buffer.data[0]):
        metrics['train/mean_iter_time_s'] = float(buffer.mean())
    print_log(', '.join(f'{k}: {v:.3f}' for k, v in metrics.items()),
              logger='current')
    runner.visualizer.add_scalars(metrics, step=runner.iter)


def main():
    args = parse_args()

    def _run():
        cfg = merge_args(load_config(args.config, args.cfg_options), args)
        apply_mlflow_args(cfg, args.mlflow_run_name, args.mlflow_tag)
        from uno.engine import build_runner
        runner = build_runner(cfg)
        start = time.perf_counter()
        try:
            runner.train()
        except BaseException as exc:  # an error or Ctrl-C: not RUNNING
            from uno.tracking import find_mlflow_backend
            backend = find_mlflow_backend(runner)
            if backend is not None:
                backend.close('KILLED' if isinstance(exc, KeyboardInterrupt)
                              else 'FAILED')
            raise
        log_train_timing(runner, time.perf_counter() - start)
        from uno.tracking import report_tracking
        report_tracking(runner)

    run_cli(_run, args.debug)


if __name__ == '__main__':
    exit_as_script(main)
