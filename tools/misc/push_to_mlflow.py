"""Push a work dir's local log into MLflow after MLflow was unavailable.

    python tools/misc/push_to_mlflow.py WORK_DIR [--tracking-uri URI]
        [--config CONFIG] [--experiment NAME] [--run-name NAME] [--debug]

See :func:`uno.tracking.replay_work_dir`. Pass ``--config`` when WORK_DIR
is not the config's default work dir.
"""
import os.path as osp
import shlex
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from _cli import ArgumentParser  # noqa: E402 (puts the repo on sys.path)


def main():
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('work_dir')
    parser.add_argument('--tracking-uri', help='default: as in training')
    parser.add_argument('--config', help='the config trained, for names')
    parser.add_argument('--experiment', help='override the experiment name')
    parser.add_argument('--run-name', help='override the run name')
    parser.add_argument('--debug', action='store_true', help='tracebacks')
    args = parser.parse_args()
    from uno.tracking import replay_work_dir
    try:
        res = replay_work_dir(args.work_dir, args.tracking_uri, args.config,
                              args.experiment, args.run_name)
    except Exception as e:  # no local log, an unreachable store
        if args.debug:
            raise
        print(f"error: {type(e).__name__}: {' '.join(str(e).split())[:500]}",
              file=sys.stderr)
        sys.exit(2)
    print(f"{'continued' if res.continued else 'created'} MLflow run "
          f'{res.run_id} ({res.run_name!r} of {res.experiment!r}): '
          f'{res.num_metrics} metric values from {res.num_logs} local logs')
    print('browse: mlflow ui --backend-store-uri',
          shlex.quote(res.tracking_uri))


if __name__ == '__main__':
    main()
