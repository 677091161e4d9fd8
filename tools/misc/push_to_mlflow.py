"""Push a run's local log into MLflow (after MLflow was unavailable).

    python tools/misc/push_to_mlflow.py WORK_DIR [--tracking-uri URI]
        [--config CONFIG] [--experiment NAME] [--run-name NAME] [--debug]

Training never stops for MLflow: when the store fails, the run keeps its
metrics in ``WORK_DIR/<timestamp>/vis_data/scalars.json``. This replays
every timestamp folder, in order, into the run the training would have
logged to (same experiment and run names, params, ``config.py``, metric
steps) and records it in ``WORK_DIR/mlflow_run_id.txt``, so a later
``tools/train.py --resume`` continues it. Pass ``--config`` (the config
the run was trained with) when the work dir is not the default one, to
name the experiment exactly. Running it twice adds nothing.
"""
import os.path as osp
import shlex
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from _cli import ROOT, ArgumentParser  # noqa: E402,F401 (repo on sys.path)


def parse_args():
    parser = ArgumentParser(
        description='Replay the local log of a work dir into MLflow')
    parser.add_argument('work_dir', help='the work dir of the run')
    parser.add_argument(
        '--tracking-uri',
        help='MLflow store (default: as in training: the config, '
        'MLFLOW_TRACKING_URI, or sqlite:///<work_dirs>/mlflow.db)')
    parser.add_argument(
        '--config',
        help='the config the run was trained with, for the experiment '
        'and run names')
    parser.add_argument('--experiment', help='override the experiment name')
    parser.add_argument('--run-name', help='override the run name')
    parser.add_argument(
        '--debug', action='store_true', help='show full tracebacks')
    return parser.parse_args()


def main():
    args = parse_args()
    from uno.tracking import replay_work_dir
    try:
        res = replay_work_dir(
            args.work_dir,
            tracking_uri=args.tracking_uri,
            config=args.config,
            experiment_name=args.experiment,
            run_name=args.run_name)
    except Exception as e:  # a missing log, an unreachable store
        if args.debug:
            raise
        message = ' '.join(str(e).split())[:500]
        print(f'error: {type(e).__name__}: {message}', file=sys.stderr)
        sys.exit(2 if isinstance(e, FileNotFoundError) else 1)
    how = 'continued' if res.continued else 'created'
    print(f'{how} MLflow run {res.run_id} ({res.run_name!r} of experiment '
          f'{res.experiment!r}): {res.num_metrics} metric values from '
          f'{res.num_logs} local log(s) of {osp.abspath(args.work_dir)}')
    print(f'MLflow tracking URI: {res.tracking_uri}')
    print('browse: mlflow ui --backend-store-uri '
          f'{shlex.quote(res.tracking_uri)}')


if __name__ == '__main__':
    main()
