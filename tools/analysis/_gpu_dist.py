"""Subprocess parts of tools/analysis/gpu_check.py (1 and 4).

Part 1 runs ``pytest -m gpu`` on the test files that hold GPU-marked
tests; part 4 runs ``tools/dist_train.sh`` with one process on the tiny
FSDP config (NCCL and bf16 on CUDA), writes a sharded checkpoint and
resumes from it. Both run with a ``python`` on ``PATH`` that is this
interpreter (``dist_train.sh`` calls ``python``; a machine may only have
``python3``).
"""
import glob
import json
import os
import os.path as osp
import re
import shutil
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

REPO = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
FSDP_CONFIG = 'configs/uno/uno_mot-tiny_2xb4-fsdp-iter200_shapes.py'
ITERS = 4  # checkpoints at 2 and 4, then resumed to 6


def _env(work: str) -> dict:
    """This interpreter as ``python`` first on PATH, offline HF, a local
    MLflow store."""
    bin_dir = osp.join(work, 'bin')
    os.makedirs(bin_dir, exist_ok=True)
    wrapper = osp.join(bin_dir, 'python')  # not a link: a venv's python
    with open(wrapper, 'w') as f:  # finds its site-packages by its path
        f.write(f'#!/bin/sh\nexec {sys.executable!r} "$@"\n')
    os.chmod(wrapper, 0o755)
    return dict(os.environ, PATH=bin_dir + os.pathsep + os.environ['PATH'],
                PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH',
                                                              ''),
                HF_HUB_OFFLINE='1', TRANSFORMERS_OFFLINE='1',
                MLFLOW_TRACKING_URI=f'sqlite:///{work}/mlflow.db',
                PYTHONUNBUFFERED='1')


def _tail(text: str, n: int = 1) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return ' / '.join(lines[-n:])[:400]


def gpu_test_files() -> list:
    """Test files that mention ``mark.gpu`` (collecting only those is
    what ``-m gpu`` selects, minus the cost of importing the rest)."""
    files = []
    for path in sorted(glob.glob(osp.join(REPO, 'tests', '**', 'test_*.py'),
                                 recursive=True)):
        with open(path, errors='replace') as f:
            if 'mark.gpu' in f.read():
                files.append(osp.relpath(path, REPO))
    return files


def part_pytest(ctx) -> dict:
    """Part 1: ``pytest -m gpu``; the counts come from its JUnit XML."""
    work = osp.join(ctx['work_dir'], 'pytest')
    os.makedirs(work, exist_ok=True)
    junit = osp.join(work, 'junit.xml')
    files = gpu_test_files() or ['tests']
    # -n 0: one process (setup.cfg's pytest-xdist workers would share the
    # GPU and pay the imports twice)
    cmd = [sys.executable, '-m', 'pytest', '-m', 'gpu', '-q', '-rfEs',
           '-p', 'no:cacheprovider', '-n', '0', f'--junitxml={junit}',
           *files]
    proc = subprocess.run(cmd, cwd=REPO, env=_env(work), text=True,
                          capture_output=True,
                          timeout=max(10, ctx['left']() - 5))
    counts = dict(tests=0, failures=0, errors=0, skipped=0)
    failed = []
    if osp.exists(junit):
        root = ET.parse(junit).getroot()
        suite = root if root.tag == 'testsuite' else root.find('testsuite')
        counts = {k: int(suite.get(k, 0)) for k in counts}
        for case in suite.iter('testcase'):
            for bad in list(case.findall('failure')) + list(
                    case.findall('error')):
                msg = (bad.get('message') or '').splitlines()
                failed.append(f"{case.get('name')}: "
                              f"{msg[0] if msg else ''}"[:300])
    passed = counts['tests'] - counts['failures'] - counts['errors'] - \
        counts['skipped']
    out = dict(summary=f"{passed} passed, {counts['failures']} failed, "
               f"{counts['errors']} errors, {counts['skipped']} skipped",
               passed=passed, returncode=proc.returncode, files=files,
               failed_tests=failed, command=' '.join(cmd[1:]),
               output_tail=proc.stdout[-2000:], **counts)
    if proc.returncode not in (0, 5):  # 5: nothing collected
        out['status'] = 'failed'
        out['error'] = failed[0] if failed else _tail(proc.stdout +
                                                      proc.stderr)
    return out


# --------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _options(iters: int, cuda: bool) -> list:
    opts = [f'train_cfg.max_iters={iters}', 'train_cfg.val_interval=1000',
            'default_hooks.logger.interval=1', 'log_processor.window_size=1',
            'default_hooks.checkpoint.interval=2']
    if cuda:  # bf16 compute, fp32 shards and reductions
        opts += ['model_wrapper_cfg.param_dtype=bfloat16',
                 'model_wrapper_cfg.reduce_dtype=float32']
    return opts


def _delta_config(work: str) -> str:
    """The FSDP config with the local JSON visualizer only (the check is
    about the launcher, NCCL, FSDP2 and checkpoints, not MLflow)."""
    path = osp.join(work, 'gpu_check_fsdp.py')
    with open(path, 'w') as f:
        f.write(f"_base_ = [{osp.join(REPO, FSDP_CONFIG)!r}]\n"
                "visualizer = dict(vis_backends=[dict(type="
                "'LocalVisBackend')])\n")
    return path


def _losses(work: str) -> dict:
    rows = {}
    for path in glob.glob(osp.join(work, '**', 'scalars.json'),
                          recursive=True):
        with open(path) as f:
            for line in f:
                row = json.loads(line)
                if 'loss' in row:
                    rows[row['step']] = row['loss']
    return rows


def part_distributed(ctx) -> dict:
    """Part 4: torchrun (1 process) on the tiny FSDP config, a sharded
    checkpoint, then ``--resume`` to two more iterations."""
    import torch
    cuda = torch.cuda.is_available() and not ctx['dry']
    work = osp.join(ctx['work_dir'], 'dist')
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    config = _delta_config(work)
    runs = osp.join(work, 'run')

    def command(iters, *extra):
        return ['bash', osp.join(REPO, 'tools', 'dist_train.sh'), config,
                '1', '--work-dir', runs, *extra, '--cfg-options',
                *_options(iters, cuda)]

    # the options must name real keys of the config: check without a run
    from mmengine.config import Config
    cfg = Config.fromfile(config)
    for opt in _options(ITERS, cuda):
        node = cfg
        for part in opt.split('=', 1)[0].split('.')[:-1]:
            node = node[part]  # a KeyError names a missing section
    figures = dict(command=' '.join(command(ITERS)), config=FSDP_CONFIG,
                   backend='nccl' if cuda else 'gloo')
    if not cuda and not ctx['args'].dist_on_cpu:
        return dict(figures, status='skipped: needs CUDA (NCCL)',
                    summary='command built and config options checked')
    results = {}
    for label, iters, extra in (('train', ITERS, ()),
                                ('resume', ITERS + 2, ('--resume', ))):
        start = time.perf_counter()
        env = dict(_env(work), PORT=str(_free_port()))
        proc = subprocess.run(command(iters, *extra), cwd=REPO, env=env,
                              text=True, capture_output=True,
                              timeout=max(10, ctx['left']() - 3))
        log = proc.stdout + proc.stderr
        with open(osp.join(work, f'{label}.log'), 'w') as f:
            f.write(log)
        results[label] = dict(returncode=proc.returncode,
                              seconds=time.perf_counter() - start)
        if proc.returncode:
            errors = [ln for ln in log.splitlines()
                      if re.search(r'Error|error:', ln)]
            return dict(figures, runs=results, status='failed',
                        error=f'{label}: ' + (errors[-1].strip()[:400]
                                              if errors else _tail(log)))
        if label == 'resume':
            results[label]['resumed'] = bool(
                re.search(r'resumed epoch: \d+, iter: \d+', log))
    from uno.engine.sharded_checkpoint import is_sharded_checkpoint
    ckpts = {n: is_sharded_checkpoint(osp.join(runs, f'iter_{n}.pth'))
             for n in (2, ITERS, ITERS + 2)}
    losses = _losses(runs)
    finite = all(v == v and abs(v) != float('inf') for v in losses.values())
    problems = [f'iter_{n}.pth is not a sharded checkpoint'
                for n, ok in ckpts.items() if not ok]
    if not results['resume'].get('resumed'):
        problems.append('the second run did not report a resume')
    if sorted(losses) != list(range(1, ITERS + 3)) or not finite:
        problems.append(f'logged losses: {losses}')
    return dict(figures, runs=results, sharded_checkpoints=ckpts,
                losses=losses, problems=problems,
                summary=f"train {results['train']['seconds']:.0f} s + "
                f"resume {results['resume']['seconds']:.0f} s, sharded "
                f'checkpoints {sum(ckpts.values())}/{len(ckpts)}, losses '
                f'{"finite" if finite else "NOT finite"}')
