"""tools/_cli.py: malformed command-line options are one line, exit 2."""
import argparse
import errno
import os
import os.path as osp
import sys

import pytest
import torch  # noqa: F401 (the skipif condition)

from tests.conftest import REPO

sys.path.insert(0, osp.join(REPO, 'tools'))
from _cli import cfg_options_action  # noqa: E402


def _parser():
    parser = argparse.ArgumentParser()
    parser.add_argument('--cfg-options', nargs='+',
                        action=cfg_options_action())
    return parser


@pytest.mark.parametrize('item,words', [
    ('train_cfg.max_iters', "'train_cfg.max_iters': use KEY=VALUE"),
    ('=5', "'=5': use KEY=VALUE"),
    ('model.freeze=[1,2', 'unbalanced brackets'),
    ('a.b=(1,2', 'unbalanced brackets'),
])
def test_malformed_cfg_option_is_one_line_and_exit_2(item, words, capsys):
    with pytest.raises(SystemExit) as info:
        _parser().parse_args(['--cfg-options', item])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith('error: --cfg-options') and words in err
    assert err.count('\n') == 1


def test_well_formed_options_parse_as_mmengine_does():
    args = _parser().parse_args(
        ['--cfg-options', 'train_cfg.max_iters=5', 'a.b=[1,2]', 'c=x'])
    assert args.cfg_options == {'train_cfg.max_iters': 5, 'a.b': [1, 2],
                                'c': 'x'}


def test_pytorch_launcher_without_torchrun_is_one_line(monkeypatch):
    from _cli import check_launcher

    from uno.errors import UnoConfigError
    for key in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'):
        monkeypatch.delenv(key, raising=False)
    check_launcher('none')
    with pytest.raises(UnoConfigError, match='RANK, WORLD_SIZE, MASTER_ADDR'
                       ', MASTER_PORT missing'):
        check_launcher('pytorch')


def test_torchrun_environment_without_launcher_is_one_line(monkeypatch):
    """torchrun without --launcher would train the whole run once per
    rank, into one work dir."""
    from _cli import check_launcher

    from uno.errors import UnoConfigError
    monkeypatch.setenv('WORLD_SIZE', '2')
    monkeypatch.setenv('RANK', '1')
    with pytest.raises(UnoConfigError, match='WORLD_SIZE=2 is set .* '
                       '--launcher is none: pass --launcher pytorch'):
        check_launcher('none')
    monkeypatch.setenv('WORLD_SIZE', '1')
    check_launcher('none')


def test_missing_custom_import_names_the_module(tmp_path):
    from _cli import load_config

    from uno.errors import UnoConfigError
    config = tmp_path / 'c.py'
    config.write_text("model = dict(type='UnoModel')\n"
                      "custom_imports = dict(imports=['no_such_mod_q'])\n")
    with pytest.raises(UnoConfigError) as info:
        load_config(str(config))
    assert 'custom_imports failed' in str(info.value)
    assert 'no_such_mod_q' in str(info.value)


@pytest.mark.skipif('torch.cuda.is_available()')
def test_amp_optim_wrapper_on_a_cpu_is_one_line(tmp_path):
    from mmengine.config import Config

    from uno.engine import build_runner
    from uno.errors import UnoConfigError
    smoke = 'configs/smoke/flow_mot-tiny_1xb8-iter200_shapes-t2i.py'
    cfg = Config.fromfile(osp.join(REPO, smoke))
    cfg.work_dir = str(tmp_path)
    cfg.optim_wrapper.type = 'AmpOptimWrapper'
    with pytest.raises(UnoConfigError, match="'AmpOptimWrapper' needs a GPU"):
        build_runner(cfg)


def test_unwritable_work_dir_is_one_line_naming_it(tmp_path):
    from uno.errors import UnoConfigError
    from uno.utils.paths import check_writable
    blocker = tmp_path / 'a_file'
    blocker.write_text('not a folder')
    with pytest.raises(UnoConfigError, match='a_file/run is not writable'):
        check_writable(str(blocker / 'run'))
    check_writable(str(tmp_path / 'fresh' / 'run'))  # created, no probe left
    assert list((tmp_path / 'fresh' / 'run').iterdir()) == []


@pytest.mark.parametrize('code', [errno.ENOSPC, errno.EROFS])
def test_failed_write_is_one_line_and_exit_2(code, capsys):
    from _cli import run_cli

    def main():
        raise OSError(code, os.strerror(code), 'work/iter_10.pth')

    with pytest.raises(SystemExit) as info:
        run_cli(main, debug=False)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert 'iter_10.pth' in err and os.strerror(code) in err
    with pytest.raises(OSError):  # --debug keeps the traceback
        run_cli(main, debug=True)


RANK = r'''
import datetime, os, sys, time
sys.path.insert(0, {tools!r})
import torch, torch.distributed as dist
from _cli import run_cli
rank, mode = int(sys.argv[1]), sys.argv[2]

def main():
    dist.init_process_group('gloo', rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=3))
    if rank == 1:
        if mode == 'stall':
            time.sleep(120)
        os._exit(1)
    dist.all_reduce(torch.ones(2))

run_cli(main, debug=False)
'''


@pytest.mark.parametrize('mode', ['stall', 'dead'])
def test_stalled_or_dead_rank_stops_the_other_with_one_line(mode, tmp_path):
    """A rank that stalls past the collective timeout, or dies, makes the
    other exit with one line and status 2 within the timeout (3 s here):
    the stalled rank is still asleep when the other has exited."""
    import socket
    import subprocess
    import time
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    script = tmp_path / 'rank.py'
    script.write_text(RANK.format(tools=osp.join(REPO, 'tools')))
    env = dict(os.environ, MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port),
               OMP_NUM_THREADS='1')
    procs = [subprocess.Popen([sys.executable, str(script), str(r), mode],
                              env=env, stderr=subprocess.PIPE, text=True)
             for r in (0, 1)]
    start = time.monotonic()
    err = procs[0].communicate(timeout=100)[1]
    waited = time.monotonic() - start
    stalled_alive = procs[1].poll() is None
    procs[1].kill()
    procs[1].communicate()
    assert procs[0].returncode == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith('error: rank 0: a collective failed')
    # the stalled rank sleeps 120 s: the timeout ended the other (the
    # wait includes both processes' start, slow on a busy machine)
    assert waited < 100
    if mode == 'stall':
        assert stalled_alive


def test_test_tool_without_benchmarks_is_one_line(tmp_path, monkeypatch,
                                                  capsys):
    from tests.tools import run_tool
    config = tmp_path / 'no_bench.py'
    config.write_text(
        f"_base_ = ['{REPO}/configs/_base_/models/mot_tiny.py']\n")
    code, _, err = run_tool('test', [str(config), str(tmp_path / 'x.pth')],
                            monkeypatch, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and 'has no test_dataloader, test_cfg, ' \
        'test_evaluator' in lines[0], err


@pytest.mark.parametrize('name, argv, words', [
    ('sweep', ['{tmp}/nope.py', '--dry-run'], 'no such config or folder'),
    ('sweep', ['{tmp}', '--jobs', '0'], '--jobs and --threads must be'),
    ('analysis/compare_runs', ['--a', '{tmp}', '--b', '{tmp}'],
     'per_item.json does not exist'),
    ('analysis/benchmark', ['--preset', 'bogus'], "invalid choice: 'bogus'"),
    ('analysis/sampler_speed', ['--heads', '3', '--hidden', '32'],
     'not divisible by num_heads=3'),
], ids=['sweep-missing', 'sweep-jobs', 'compare', 'benchmark', 'sampler'])
def test_other_tools_fail_with_one_line_and_exit_2(name, argv, words,
                                                   tmp_path, monkeypatch,
                                                   capsys):
    """The tools without a config take the same one-line contract."""
    from tests.tools import run_tool
    argv = [a.replace('{tmp}', str(tmp_path)) for a in argv]
    code, _, err = run_tool(name, argv, monkeypatch, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err[-2000:]
    assert lines[0].startswith('error: ') and words in lines[0], lines[0]


@pytest.mark.parametrize('name, argv', [
    ('misc/push_to_mlflow', ['{work}', '--tracking-uri', '{uri}']),
    ('analysis/report', ['--experiments', 'x', '--tracking-uri', '{uri}']),
    ('analysis/plot_gradient_flow', ['--mlflow-uri', '{uri}', '--run-id',
                                     'abc', '--out', '{tmp}/g.png']),
], ids=['push', 'report', 'gradient-flow'])
def test_mlflow_readers_of_a_dead_server_fail_fast_in_one_line(
        name, argv, tmp_path, monkeypatch, capsys):
    """Bounded retries (bound_http_requests): seconds, not minutes."""
    import time

    from tests.tools import run_tool
    from uno.tracking.mlflow_backend import HTTP_DEFAULTS
    work = tmp_path / 'work' / '20260101_000000' / 'vis_data'
    work.mkdir(parents=True)
    (work / 'scalars.json').write_text('{"loss": 1.0, "step": 1}\n')
    uri = 'http://127.0.0.1:9'
    argv = [a.format(work=tmp_path / 'work', uri=uri, tmp=tmp_path)
            for a in argv]
    start = time.time()
    code, _, err = run_tool(name, argv, monkeypatch, capsys,
                            env=HTTP_DEFAULTS)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err[-2000:]
    assert lines[0].startswith('error: ') and '127.0.0.1' in lines[0]
    assert time.time() - start < 60


_SCRIPT = r'''
import atexit, os, sys, threading, time
sys.path.insert(0, os.path.join({repo!r}, 'tools'))
from _cli import exit_as_script
out = {out!r}
atexit.register(lambda: open(out + '.atexit', 'w').close())


def slow():
    time.sleep(0.5)
    open(out + '.thread', 'w').close()


def main():
    if {thread!r}:
        threading.Thread(target=slow).start()
    sys.stdout.write('buffered, no newline')
    return {code!r}


exit_as_script(main)
'''


@pytest.mark.parametrize('code,thread', [(0, False), (3, False), (0, True)])
def test_exit_as_script_keeps_status_output_atexit_and_threads(
        tmp_path, code, thread):
    """The fast exit keeps the exit status, flushes the output, runs the
    atexit handlers, and waits for a non-daemon thread (normal exit)."""
    import subprocess
    out = str(tmp_path / 'mark')
    script = tmp_path / 'tool.py'
    script.write_text(_SCRIPT.format(repo=REPO, out=out, code=code,
                                     thread=thread))
    res = subprocess.run([sys.executable, str(script)], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == code, res.stderr
    assert res.stdout == 'buffered, no newline'
    assert osp.exists(out + '.atexit')
    assert osp.exists(out + '.thread') == thread
