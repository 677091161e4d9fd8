"""Train (and evaluate) configs over several seeds, a few runs at a time.

    python tools/sweep.py CONFIG_OR_FOLDER [...] --seeds 0 1 2 [--jobs N]
        [--threads T] [--eval] [--eval-checkpoints last iter_300 ...]
        [--eval-cfg-options k=v ...] [--work-dirs DIR] [--dry-run]
        [--force] [--cfg-options k=v ...]

A folder stands for its ``*.py`` files (sorted). Each config and seed is
one run in ``<work-dirs>/<config folder below configs/>/<stem>/seed<k>``:
``tools/train.py`` with ``randomness.seed=<k>``, then with ``--eval``
``tools/test.py`` on each checkpoint asked for (``last``: the final one;
``iter_300``: ``iter_300.pth`` of the run), whose results land in
``<work dir>/eval/<checkpoint stem>/metrics.json``. Output of each command
goes to ``sweep_train.log`` / ``sweep_eval-<checkpoint>.log`` in the work
dir. ``--cfg-options`` go to both tools, ``--eval-cfg-options`` to
``tools/test.py`` only.

MLflow (``MLFLOW_TRACKING_URI``, else ``<work-dirs>/mlflow.db``): the
experiment stays the config's folder; runs are named
``<stem>-s<k>`` (training) and ``<stem>-s<k>-eval`` (``last``) or
``<stem>-s<k>-eval-<checkpoint>``, tagged ``sweep`` (config folder),
``config`` (stem), ``seed`` and, for evaluations, ``checkpoint``.

A run whose final checkpoint and asked-for ``metrics.json`` files exist is
skipped, one whose training stopped part-way resumes (``--resume``, same
MLflow run); ``--force`` retrains from scratch. A failed run is reported
and the others go on; the exit status is 1 if any run failed.
"""
import argparse
import glob
import os
import os.path as osp
import shlex
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Dict, List, Optional

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
sys.path.insert(0, osp.join(ROOT, 'tools'))
from _cli import ArgumentParser, exit_as_script, fail  # noqa: E402

TRAIN = osp.join(ROOT, 'tools', 'train.py')
TEST = osp.join(ROOT, 'tools', 'test.py')
_live = set()  # the Popen objects running now (to stop on Ctrl-C)
_live_lock = threading.Lock()


@dataclass
class Run:
    """One config and seed, and what happened to it."""
    config: str
    folder: str  # the config's folder below configs/ (MLflow experiment)
    stem: str
    seed: int
    work_dir: str
    final: Optional[str] = None  # final checkpoint's file name, if known
    status: str = 'pending'
    train_min: Optional[float] = None
    outputs: List[str] = field(default_factory=list)
    error: str = ''


def parse_args(argv=None):
    parser = ArgumentParser(
        description='Train configs over seeds',
        epilog='e.g. python tools/sweep.py configs/ablations/'
        'metaquery_count --seeds 0 1 2 --jobs 2 --eval')
    parser.add_argument('configs', nargs='+', metavar='CONFIG_OR_FOLDER')
    parser.add_argument('--seeds', nargs='+', type=int, default=[0])
    parser.add_argument('--jobs', type=int, default=1,
                        help='runs at the same time (default 1)')
    parser.add_argument('--threads', type=int,
                        help='OMP/MKL threads per run (default: cores // '
                        'jobs)')
    parser.add_argument('--eval', action='store_true',
                        help='run tools/test.py after training')
    parser.add_argument('--eval-checkpoints', nargs='+', default=['last'],
                        metavar='NAME', help="'last' or e.g. iter_300")
    parser.add_argument('--eval-cfg-options', nargs='+', default=[],
                        metavar='K=V', help='--cfg-options of tools/test.py')
    parser.add_argument('--work-dirs', default='work_dirs',
                        help='root of the work dirs (default work_dirs)')
    parser.add_argument('--dry-run', action='store_true',
                        help='print the commands only')
    parser.add_argument('--force', action='store_true',
                        help='rerun finished runs, training from scratch')
    parser.add_argument('--cfg-options', nargs='+', default=[],
                        metavar='K=V', help='--cfg-options of both tools')
    args = parser.parse_args(argv)
    if args.jobs < 1 or (args.threads is not None and args.threads < 1):
        parser.error('--jobs and --threads must be at least 1')
    return args


def expand_configs(paths: List[str]) -> List[str]:
    """Config files in order: a folder gives its ``*.py`` sorted."""
    out = []
    for path in paths:
        if osp.isdir(path):
            found = sorted(glob.glob(osp.join(path, '*.py')))
            if not found:
                fail(f'no *.py config in {path}')
            out += found
        elif osp.isfile(path):
            out.append(path)
        else:
            fail(f'{path}: no such config or folder')
    return list(dict.fromkeys(out))


def final_checkpoint(config: str, options: List[str]) -> Optional[str]:
    """``iter_<max_iters>.pth`` (or ``epoch_<n>.pth``) of the config with
    ``options``; None if it cannot be told (train.py will say why)."""
    try:
        from mmengine.config import Config, DictAction
        cfg = Config.fromfile(config)
        if options:
            ns = argparse.Namespace()
            DictAction(option_strings=[], dest='o')(None, ns, options)
            cfg.merge_from_dict(ns.o)
        loop = cfg.get('train_cfg') or {}
        if loop.get('max_iters'):
            return f"iter_{loop['max_iters']}.pth"
        if loop.get('max_epochs'):
            return f"epoch_{loop['max_epochs']}.pth"
    except Exception:
        pass
    return None


def plan_runs(args) -> List[Run]:
    """The runs of the sweep, config-major."""
    from uno.utils.paths import config_identity
    runs = []
    for config in expand_configs(args.configs):
        ident = config_identity(config)
        final = final_checkpoint(config, args.cfg_options)
        for seed in args.seeds:
            work_dir = osp.join(args.work_dirs, ident.experiment,
                                ident.run_name, f'seed{seed}')
            runs.append(Run(config, ident.experiment, ident.run_name, seed,
                            work_dir, final))
    return runs


def tags(run: Run) -> List[str]:
    """``--mlflow-tag`` values shared by a run's train and eval runs."""
    return [f'sweep={run.folder}', f'config={run.stem}', f'seed={run.seed}']


def train_command(run: Run, options: List[str], resume: bool) -> List[str]:
    """The tools/train.py command of ``run``."""
    cmd = [sys.executable, TRAIN, run.config, '--work-dir', run.work_dir]
    if resume:
        cmd.append('--resume')
    cmd += ['--cfg-options', *options, f'randomness.seed={run.seed}',
            '--mlflow-run-name', f'{run.stem}-s{run.seed}',
            '--mlflow-tag', *tags(run)]
    return cmd


def eval_command(run: Run, name: str, ckpt: str,
                 options: List[str]) -> List[str]:
    """The tools/test.py command of checkpoint ``name`` (path ``ckpt``)."""
    suffix = '' if name == 'last' else f'-{name}'
    return [sys.executable, TEST, run.config, ckpt, '--cfg-options',
            *options, f'randomness.seed={run.seed}', '--mlflow-run-name',
            f'{run.stem}-s{run.seed}-eval{suffix}', '--mlflow-tag',
            *tags(run), f'checkpoint={name}']


def checkpoint_path(run: Run, name: str) -> Optional[str]:
    """Where checkpoint ``name`` of ``run`` is (``last``: the one in
    ``last_checkpoint``, else the final one); None if unknown."""
    if name == 'last':
        pointer = osp.join(run.work_dir, 'last_checkpoint')
        if osp.isfile(pointer):
            with open(pointer) as f:
                path = osp.normpath(f.read().strip())
            if osp.basename(path) == run.final or run.final is None:
                return path if osp.isabs(path) else osp.join(
                    run.work_dir, osp.basename(path))
        return osp.join(run.work_dir, run.final) if run.final else None
    base = name if name.endswith('.pth') else name + '.pth'
    return osp.join(run.work_dir, base)


def metrics_file(ckpt: str) -> str:
    """Where tools/test.py writes the metrics of ``ckpt``."""
    stem = osp.splitext(osp.basename(osp.normpath(ckpt)))[0]
    return osp.join(osp.dirname(osp.normpath(ckpt)), 'eval', stem,
                    'metrics.json')


def eval_targets(run: Run, names: List[str]) -> Dict[str, Optional[str]]:
    """``{name: checkpoint path}``, one name per distinct checkpoint."""
    out, seen = {}, set()
    for name in names:
        path = checkpoint_path(run, name)
        key = osp.abspath(path) if path else name
        if key not in seen:
            seen.add(key)
            out[name] = path
    return out


def store_uri(work_dirs: str) -> str:
    """The MLflow store of the runs: ``MLFLOW_TRACKING_URI``, else the
    sqlite file that training would pick, in the last ``work_dirs`` folder
    of ``work_dirs`` (else in ``work_dirs`` itself, so that all runs of
    the sweep share one store)."""
    from uno.utils.paths import work_dirs_root
    return os.environ.get('MLFLOW_TRACKING_URI') or (
        'sqlite:///' + osp.join(work_dirs_root(work_dirs), 'mlflow.db'))


def prepare_store(uri: str) -> None:
    """Create (migrate) a new sqlite store once, before parallel runs
    would race to migrate it; a store that cannot be opened is left to
    the runs, which keep their metrics locally (a warning each)."""
    if not uri.startswith('sqlite:///'):
        return
    try:
        import mlflow
        os.makedirs(osp.dirname(uri[len('sqlite:///'):]) or '.',
                    exist_ok=True)
        mlflow.MlflowClient(uri).search_experiments(max_results=1)
    except Exception as e:  # noqa: BLE001 (the runs report it again)
        print(f'sweep: cannot open the MLflow store {uri} '
              f'({type(e).__name__}); runs keep their metrics locally',
              file=sys.stderr)


def _run_logged(cmd: List[str], log: str, env: dict) -> int:
    """Run ``cmd`` with stdout and stderr to ``log``; its exit status."""
    os.makedirs(osp.dirname(osp.abspath(log)), exist_ok=True)
    with open(log, 'w') as f:
        f.write('$ ' + shlex.join(cmd) + '\n')
        f.flush()
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT,
                                env=env)
        with _live_lock:
            _live.add(proc)
        try:
            return proc.wait()
        finally:
            with _live_lock:
                _live.discard(proc)


def _last_error(log: str) -> str:
    """The last line of ``log`` that looks like the reason of a failure."""
    try:
        with open(log, errors='replace') as f:
            lines = [ln.strip() for ln in f if ln.strip()]
    except OSError:
        return ''
    for line in reversed(lines):
        if line.startswith(('error:', 'stopped:')) or 'Error' in line:
            return line[:200]
    return lines[-1][:200] if lines else ''


def execute(run: Run, args, env: dict) -> Run:
    """Train ``run`` unless done, then evaluate what is missing."""
    final = osp.join(run.work_dir, run.final) if run.final else None
    trained = final is not None and osp.exists(final) and not args.force
    if not trained:
        resume = not args.force and osp.isfile(
            osp.join(run.work_dir, 'last_checkpoint'))
        log = osp.join(run.work_dir, 'sweep_train.log')
        start = time.time()
        rc = _run_logged(train_command(run, args.cfg_options, resume), log,
                         env)
        run.train_min = (time.time() - start) / 60
        if rc != 0:
            run.status = f'failed (train exit {rc})'
            run.error, run.outputs = _last_error(log), [log]
            return run
    run.outputs = [run.work_dir]
    ran_any = not trained
    if args.eval:
        run.outputs = []
        for name, ckpt in eval_targets(run, args.eval_checkpoints).items():
            if ckpt is None or not osp.exists(ckpt):
                run.status = f'failed (no checkpoint {name})'
                run.error = f'{ckpt or name} does not exist'
                return run
            out = metrics_file(ckpt)
            if osp.isfile(out) and not args.force:
                run.outputs.append(out)
                continue
            log = osp.join(run.work_dir, f'sweep_eval-{name}.log')
            options = args.cfg_options + args.eval_cfg_options
            rc = _run_logged(eval_command(run, name, ckpt, options), log, env)
            ran_any = True
            if rc != 0:
                run.status = f'failed (eval {name} exit {rc})'
                run.error, run.outputs = _last_error(log), [log]
                return run
            run.outputs.append(out)
    run.status = 'ok' if ran_any else 'skipped'
    return run


def dry_run(runs: List[Run], args, threads: int) -> None:
    """Print what a real sweep would run."""
    prefix = f'OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} '
    for run in runs:
        final = osp.join(run.work_dir, run.final) if run.final else None
        if final and osp.exists(final) and not args.force:
            print(f'# {run.stem} seed {run.seed}: trained ({final})')
        else:
            resume = not args.force and osp.isfile(
                osp.join(run.work_dir, 'last_checkpoint'))
            cmd = train_command(run, args.cfg_options, resume)
            print(prefix + shlex.join(cmd) + ' > ' + shlex.quote(
                osp.join(run.work_dir, 'sweep_train.log')) + ' 2>&1')
        if not args.eval:
            continue
        for name, ckpt in eval_targets(run, args.eval_checkpoints).items():
            ckpt = ckpt or f'<{name} checkpoint of {run.work_dir}>'
            if osp.isfile(metrics_file(ckpt)) and not args.force:
                print(f'# {run.stem} seed {run.seed}: evaluated '
                      f'({metrics_file(ckpt)})')
                continue
            cmd = eval_command(run, name, ckpt,
                               args.cfg_options + args.eval_cfg_options)
            print(prefix + shlex.join(cmd) + ' > ' + shlex.quote(
                osp.join(run.work_dir, f'sweep_eval-{name}.log')) + ' 2>&1')


def summary(runs: List[Run]) -> str:
    """The final table: config, seed, status, minutes, metrics."""
    rows = [('config', 'seed', 'status', 'train min', 'metrics')]
    for run in runs:
        minutes = '-' if run.train_min is None else f'{run.train_min:.1f}'
        rows.append((run.stem, str(run.seed), run.status, minutes,
                     ', '.join(run.outputs)))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ['  '.join(c.ljust(w) for c, w in zip(r, widths)) + '  ' + r[4]
             for r in rows]
    lines.insert(1, '  '.join('-' * w for w in widths) + '  ' + '-' * 7)
    return '\n'.join(line.rstrip() for line in lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    runs = plan_runs(args)
    cores = len(os.sched_getaffinity(0)) if hasattr(
        os, 'sched_getaffinity') else (os.cpu_count() or 1)
    threads = args.threads or max(1, cores // args.jobs)
    uri = store_uri(args.work_dirs)
    if args.dry_run:
        print(f'# MLflow store: {uri}')
        dry_run(runs, args, threads)
        return 0
    env = dict(os.environ, OMP_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED='1',
               MLFLOW_TRACKING_URI=uri)
    print(f'sweep: {len(runs)} runs, {args.jobs} at a time, {threads} '
          'threads each', flush=True)
    if args.jobs > 1:
        prepare_store(uri)
    pool = ThreadPoolExecutor(max_workers=args.jobs)
    try:
        futures = [pool.submit(execute, run, args, env) for run in runs]
        for done, future in enumerate(as_completed(futures), 1):
            run = future.result()
            minutes = '' if run.train_min is None else \
                f', trained in {run.train_min:.1f} min'
            line = (f'[{done}/{len(runs)}] {run.stem} seed {run.seed}: '
                    f'{run.status}{minutes}')
            print(line + (f' - {run.error}' if run.error else ''),
                  flush=True)
    except KeyboardInterrupt:
        pool.shutdown(wait=False, cancel_futures=True)
        with _live_lock:
            for proc in _live:
                proc.terminate()
        print('interrupted; rerun the same command to resume',
              file=sys.stderr)
        return 130
    pool.shutdown()
    print('\n' + summary(runs))
    failed = [r for r in runs if r.status.startswith('failed')]
    folders = sorted({r.folder for r in runs})
    print(f"\nMLflow experiments {', '.join(folders)} in {uri}; compare "
          'with: python tools/analysis/report.py --experiments '
          + ' '.join(map(shlex.quote, folders)) + ' --tracking-uri '
          + shlex.quote(uri))
    if failed:
        print(f'{len(failed)} of {len(runs)} runs failed', file=sys.stderr)
    return 1 if failed else 0


if __name__ == '__main__':
    exit_as_script(main)
