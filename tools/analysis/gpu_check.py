"""GPU readiness check: six parts, one JSON and one Markdown table.

Parts (``--parts``, default all), each under its own time budget; a part
that fails is recorded with its error line and the run goes on:

1. ``pytest -m gpu`` on the test files that hold GPU-marked tests;
2. correctness in bf16: a 2-layer MoT with BAGEL-7B's layer shapes, a
   packed UNO batch, forward and backward with every attention backend
   against eager fp32, and prompt masking with 1 layer;
3. throughput and MFU: the full-depth BAGEL-7B-MoT shape (28 layers, bf16,
   und side frozen), UNO and SFT steps, checkpointing on/off, each
   backend, MFU against the datasheet and a measured GEMM peak;
4. distributed: ``tools/dist_train.sh`` with one process (NCCL, FSDP2,
   bf16) on the tiny FSDP config, a sharded checkpoint, then ``--resume``;
5. sampling: the KV-cached CFG sampler against recomputing, images/s;
6. the encoders (timm ViT, SigLIP, the VAE) in bf16 on the device.

On a GPU every part runs in a child process of its own (a CUDA error or
a fragmented allocator cannot spoil the next part); ``--dry-run`` runs
every part in-process at toy sizes on the CPU, skipping with a reason
what needs CUDA, so the script is known to start before a GPU is lent.

Example:
    python tools/analysis/gpu_check.py --out work_dirs/gpu_check
    python tools/analysis/gpu_check.py --parts 2,3 --scale 0.5
    python tools/analysis/gpu_check.py --dry-run --out /tmp/gpu_check
"""
import argparse
import json
import os
import os.path as osp
import signal
import subprocess
import sys
import tempfile
import time

HERE = osp.dirname(osp.abspath(__file__))
REPO = osp.abspath(osp.join(HERE, '..', '..'))
for _p in (REPO, HERE):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import _gpu_dist as gd  # noqa: E402
import _gpu_setup as gs  # noqa: E402

#: part -> (name, seconds on a GPU); about 8 minutes in all
#: (measured on an H200, 2026-11-30: 47-71, 25-40, 143 (AdamW step cut),
#: 70, 27 and 16 s; part 5 now also samples in fp32 as a reference)
PARTS = {1: ('pytest_gpu', 80), 2: ('correctness', 60),
         3: ('throughput', 165), 4: ('distributed', 80), 5: ('sampling', 60),
         6: ('encoders', 25)}
GRACE = 30  # a child's start-up (imports, CUDA) beyond its part's budget


class PartTimeout(Exception):
    """A part ran past its budget."""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--parts', default='1,2,3,4,5,6',
                        help='comma-separated part numbers')
    parser.add_argument('--dry-run', action='store_true',
                        help='toy sizes on the CPU, in-process')
    parser.add_argument('--scale', type=float, default=1.0,
                        help='size factor of parts 3 and 5 (smaller GPUs)')
    parser.add_argument('--budget-scale', type=float, default=1.0,
                        help='multiply every part time budget')
    parser.add_argument('--out', default='work_dirs/gpu_check',
                        help='folder of gpu_check.json / .md / .log')
    parser.add_argument('--work-dir', default=None,
                        help='scratch folder: child logs, the '
                        'distributed run (default: $TMPDIR/gpu_check_work)')
    parser.add_argument('--isolate', choices=('auto', 'yes', 'no'),
                        default='auto', help='one child process per part '
                        '(auto: on CUDA and not in a dry run)')
    parser.add_argument('--dist-on-cpu', action='store_true',
                        help='run part 4 on the CPU with gloo (slow)')
    parser.add_argument('--child', type=int, default=0,
                        help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _device() -> str:
    import torch
    return 'cuda' if torch.cuda.is_available() else 'cpu'


def environment() -> dict:
    """Versions, the device and which optional packages import."""
    import importlib
    import platform
    import torch
    env = dict(python=platform.python_version(), torch=torch.__version__,
               cuda=torch.version.cuda,
               cuda_available=torch.cuda.is_available(),
               date=time.strftime('%Y-%m-%d %H:%M:%S %Z'))
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update(gpu=torch.cuda.get_device_name(),
                   capability='.'.join(map(str, props.major_minor()))
                   if hasattr(props, 'major_minor') else
                   f'{props.major}.{props.minor}',
                   gpu_memory_gib=props.total_memory / 2**30,
                   gpus=torch.cuda.device_count())
    packages = {}
    for name in ('mmengine', 'timm', 'transformers', 'diffusers', 'mlflow',
                 'xformers', 'triton', 'safetensors', 'pytest'):
        try:
            packages[name] = getattr(importlib.import_module(name),
                                     '__version__', 'present')
        except Exception as err:  # noqa: BLE001 (a broken install too)
            packages[name] = f'missing ({gs.last_line(err)})'
    env['packages'] = packages
    try:
        env['commit'] = subprocess.run(
            ['git', 'describe', '--always', '--dirty'], cwd=REPO, text=True,
            capture_output=True, timeout=10).stdout.strip()
    except Exception:  # noqa: BLE001
        env['commit'] = None
    return env


# --------------------------------------------------------------------------
def part_function(number: int):
    if number in (1, 4):
        return gd.part_pytest if number == 1 else gd.part_distributed
    import _gpu_infer as gi
    import _gpu_parts as gp
    return {2: gp.part_correctness, 3: gp.part_throughput,
            5: gi.part_sampling, 6: gi.part_encoders}[number]


def _alarm(signum, frame):
    raise PartTimeout('ran past its time budget')


def run_part(number: int, args, device: str) -> dict:
    """Run one part in this process under its budget; never raises."""
    name, budget = PARTS[number]
    budget *= args.budget_scale
    start = time.perf_counter()
    ctx = dict(device=device, dry=args.dry_run, args=args,
               sizes=gs.sizes(args.dry_run, args.scale),
               work_dir=args.work_dir, budget=budget, figures={},
               left=lambda: budget - (time.perf_counter() - start))
    use_alarm = hasattr(signal, 'SIGALRM')
    if use_alarm:
        old = signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, budget + 10)
    try:
        figures = part_function(number)(ctx)
        status = figures.pop('status', 'ok')
        problems = figures.get('problems') or []
        error = figures.pop('error', None) or (
            '; '.join(problems)[:600] if problems else None)
        if problems and status == 'ok':
            status = 'failed'
    except BaseException as err:  # noqa: BLE001 (KeyboardInterrupt too)
        if isinstance(err, KeyboardInterrupt):
            raise
        # what the part measured before it failed is kept
        figures, status, error = ctx['figures'], 'failed', gs.last_line(err)
    finally:
        if use_alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
        gs.free_memory(device)
    return dict(part=number, name=name, status=status, error=error,
                seconds=time.perf_counter() - start, budget_s=budget,
                figures=figures)


def run_isolated(number: int, args) -> dict:
    """Run one part in a child process; a crash or hang is a failure."""
    name, budget = PARTS[number]
    budget *= args.budget_scale
    out = osp.join(args.work_dir, f'part{number}.json')
    log = osp.join(args.work_dir, f'part{number}.log')
    if osp.exists(out):
        os.remove(out)
    cmd = [sys.executable, osp.abspath(__file__), '--child', str(number),
           '--scale', str(args.scale), '--budget-scale',
           str(args.budget_scale), '--work-dir', args.work_dir]
    cmd += ['--dry-run'] * args.dry_run + ['--dist-on-cpu'] * args.dist_on_cpu
    start = time.perf_counter()
    error = None
    with open(log, 'w') as f:
        try:
            proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT,
                                  timeout=budget + GRACE, cwd=REPO)
            if proc.returncode:
                error = f'child exited with {proc.returncode}'
        except subprocess.TimeoutExpired:
            error = f'killed after {budget + GRACE:.0f} s (time budget)'
    with open(log, errors='replace') as f:
        text = f.read()
    os.makedirs(args.out, exist_ok=True)
    with open(osp.join(args.out, 'gpu_check.log'), 'a') as f:
        f.write(f'===== part {number} {name}\n{text}\n')
    if osp.exists(out):
        with open(out) as f:
            return json.load(f)
    tail = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return dict(part=number, name=name, status='failed',
                error=f'{error}: {tail[-1] if tail else "no output"}'[:500],
                seconds=time.perf_counter() - start, budget_s=budget,
                figures={})


# --------------------------------------------------------------------------
def markdown(meta: dict, results: list) -> str:
    env = meta['environment']
    lines = [f"# GPU check, {env['date']}", '',
             f"Device: {env.get('gpu', 'CPU')} ({meta['device']}), torch "
             f"{env['torch']}, CUDA {env['cuda']}, commit {env['commit']}; "
             f"{'dry run (toy sizes), ' if meta['dry_run'] else ''}"
             f"scale {meta['scale']}, {meta['seconds']:.0f} s in all.", '',
             '| part | status | seconds (budget) | figures | error |',
             '| --- | --- | --- | --- | --- |']
    for r in results:
        summary = r['figures'].get('summary', '')
        error = (r['error'] or '').replace('|', '/').replace('\n', ' ')
        lines.append(f"| {r['part']} {r['name']} | {r['status']} | "
                     f"{r['seconds']:.1f} ({r['budget_s']:.0f}) | "
                     f"{summary.replace('|', '/')} | {error} |")
    lines += _detail_tables(results)
    missing = [k for k, v in env['packages'].items() if 'missing' in str(v)]
    if missing:
        lines += ['', f"Missing packages: {', '.join(missing)}."]
    return '\n'.join(lines) + '\n'


def _fmt(value, spec='.3g'):
    if value is None:
        return '-'
    return format(value, spec) if isinstance(value, float) else str(value)


def _detail_tables(results: list) -> list:
    lines = []
    by = {r['part']: r['figures'] for r in results}
    if by.get(2, {}).get('backends'):
        lines += ['', '## 2: bf16 vs eager fp32 (norm-wise relative error)',
                  '', '| variant | status | out | grad (worst) | pass |',
                  '| --- | --- | --- | --- | --- |']
        for k, v in by[2]['backends'].items():
            lines.append(
                f"| {k} | {v['status']} | {_fmt(v.get('out_rel'))} | "
                f"{_fmt(v.get('grad_rel'))} {v.get('worst_grad', '')} | "
                f"{_fmt(v.get('pass'))} |")
    if by.get(3, {}).get('runs'):
        lines += ['', '## 3: training steps', '',
                  '| run | status | step s | tokens/s | peak GiB | MFU '
                  'datasheet | MFU GEMM |', '| --- | --- | --- | --- | --- '
                  '| --- | --- |']
        for k, v in by[3]['runs'].items():
            lines.append(
                f"| {k} | {v['status']} {v.get('error', '')} | "
                f"{_fmt(v.get('step_s'))} | {_fmt(v.get('tokens_per_s'))} "
                f"| {_fmt(v.get('peak_gib'))} | "
                f"{_fmt(v.get('mfu_datasheet'), '.1%')} | "
                f"{_fmt(v.get('mfu_gemm'), '.1%')} |")
    prof = by.get(3, {}).get('profile') or {}
    if prof.get('top'):
        lines += ['', f"## 3: the UNO step's top {prof['kind']} "
                  f"({prof['total_ms']:.0f} ms in all)", '',
                  '| name | ms | share | calls |', '| --- | --- | --- | --- |']
        lines += [f"| `{r['name'].replace('|', '/')}` | {r['ms']:.1f} | "
                  f"{r['share']:.1%} | {r['calls']} |" for r in prof['top']]
    return lines


def write(out_dir: str, meta: dict, results: list) -> None:
    os.makedirs(out_dir, exist_ok=True)
    with open(osp.join(out_dir, 'gpu_check.json'), 'w') as f:
        json.dump(dict(meta=meta, parts=results), f, indent=1, default=str)
    with open(osp.join(out_dir, 'gpu_check.md'), 'w') as f:
        f.write(markdown(meta, results))


def main(argv=None) -> dict:
    args = parse_args(argv)
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')
    args.work_dir = osp.abspath(args.work_dir or osp.join(
        tempfile.gettempdir(), 'gpu_check_work'))
    os.makedirs(args.work_dir, exist_ok=True)
    if args.child:  # one part, written where the parent reads it
        result = run_part(args.child, args,
                          'cpu' if args.dry_run else _device())
        with open(osp.join(args.work_dir, f'part{args.child}.json'),
                  'w') as f:
            json.dump(result, f, indent=1, default=str)
        return result
    device = 'cpu' if args.dry_run else _device()
    isolate = (args.isolate == 'yes' or args.isolate == 'auto'
               and device == 'cuda')
    start = time.perf_counter()
    meta = dict(environment=environment(), device=device,
                dry_run=args.dry_run, scale=args.scale, isolate=isolate,
                command=' '.join(sys.argv), parts=args.parts)
    results = []
    log = osp.join(args.out, 'gpu_check.log')
    if isolate and osp.exists(log):
        os.remove(log)
    for number in sorted(int(p) for p in args.parts.split(',') if p):
        print(f'[{time.perf_counter() - start:6.1f} s] part {number} '
              f'{PARTS[number][0]} ...', flush=True)
        result = (run_isolated(number, args) if isolate else
                  run_part(number, args, device))
        results.append(result)
        print(f"[{time.perf_counter() - start:6.1f} s] part {number}: "
              f"{result['status']} {result['error'] or ''}", flush=True)
        meta['seconds'] = time.perf_counter() - start
        write(args.out, meta, results)  # after every part: a kill keeps it
    print(markdown(meta, results))
    return dict(meta=meta, parts=results)


if __name__ == '__main__':
    main()
