"""Shared fixtures: offline environment, tiny plans, singleton reset."""
import os

os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')
os.environ.setdefault('MLFLOW_DISABLE_TELEMETRY', 'true')


def _worker_threads() -> int:
    """Threads per pytest-xdist worker: the cores shared out between the
    workers (``-n`` in setup.cfg), at least one."""
    cores = len(os.sched_getaffinity(0)) if hasattr(
        os, 'sched_getaffinity') else (os.cpu_count() or 1)
    workers = int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1'))
    return max(1, cores // workers)


if os.environ.get('PYTEST_XDIST_WORKER'):
    # the workers share the cores; the processes a test starts inherit
    # the same count, so in-process and subprocess runs stay comparable
    os.environ.setdefault('OMP_NUM_THREADS', str(_worker_threads()))
else:  # the controller, before the workers start
    # Tool tests start dozens of processes that import uno. Where
    # PYTHONDONTWRITEBYTECODE is set, none of them wrote uno's bytecode
    # and each compiled all of it again (~1 s a process on 2 cores);
    # compile it once, into the __pycache__ folders every Python run
    # writes (git ignores them), and every process reads it.
    import compileall
    _root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for _folder in ('uno', 'tools'):
        compileall.compile_dir(os.path.join(_root, _folder), quiet=1)

import atexit  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from uno.structures import Segment, SequencePlan  # noqa: E402

if os.environ.get('PYTEST_XDIST_WORKER'):
    torch.set_num_threads(int(os.environ['OMP_NUM_THREADS']))

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BOS, EOS, VS, VE = 1, 2, 4, 5


class TinyTokenizer:
    """Specials at the WordTokenizer's ids; words are their own ids."""
    pad_id, bos_id, eos_id, unk_id = 0, BOS, EOS, 3
    vision_start_id, vision_end_id = VS, VE
    vocab_size = 32


#: the test files that take longest (multi-process runs, the GPU check's
#: dry run), about longest first: they start first, so the two
#: pytest-xdist workers end together (pytest-xdist's own order, most
#: tests first, put them last, where one worker ran them while the other
#: sat idle). The GPU check second: it needs no ``baseline_run``, which
#: the first file's worker runs meanwhile.
LONG_FILES = ('tests/test_engine/test_fsdp.py',
              'tests/test_tools/test_gpu_check.py',
              'tests/test_engine/test_resume.py',
              'tests/test_tools/test_sweep.py',
              'tests/test_engine/test_ddp.py')


def _file_order(items):
    """``items`` by file: ``LONG_FILES`` first, then the rest with the
    most tests first (pytest-xdist's order), each file's tests in their
    order. setup.cfg's ``--no-loadscope-reorder`` keeps this order."""
    files = {}
    for item in items:
        files.setdefault(item.nodeid.split('::')[0], []).append(item)
    long = [f for f in LONG_FILES if f in files]
    rest = sorted((f for f in files if f not in long),
                  key=lambda f: -len(files[f]))  # stable: ties as found
    return [item for f in long + rest for item in files[f]]


def pytest_collection_modifyitems(config, items):
    """Order the files (:func:`_file_order`); skip ``gpu`` tests where
    CUDA is absent (and only there)."""
    items[:] = _file_order(items)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason='needs CUDA')
    for item in items:
        if 'gpu' in item.keywords:
            item.add_marker(skip)


_TEMPLATE = {}


def mlflow_store(path) -> str:
    """The sqlite URI of an MLflow store at ``path``, created (when absent)
    as a copy of one migrated template: migrating a new store costs ~5 s,
    a copy ~0.1 s."""
    path = str(path)
    if not os.path.exists(path):
        if 'db' not in _TEMPLATE:
            import mlflow
            folder = tempfile.mkdtemp(prefix='uno-mlflow-template-')
            atexit.register(shutil.rmtree, folder, True)
            template = os.path.join(folder, 'template.db')
            mlflow.MlflowClient(f'sqlite:///{template}').search_experiments()
            _TEMPLATE['db'] = template
        shutil.copy(_TEMPLATE['db'], path)
    return f'sqlite:///{path}'


def reset_mmengine_singletons():
    """mmengine keeps global instances (loggers, visualizers, message hubs,
    default scope); clear them so runs do not leak into each other."""
    from mmengine.logging import MessageHub, MMLogger
    from mmengine.registry import DefaultScope
    from mmengine.visualization import Visualizer
    for cls in (MMLogger, Visualizer, MessageHub, DefaultScope):
        cls._instance_dict.clear()


#: the UNO baseline config, trained by :func:`baseline_run`
BASELINE = 'configs/uno/uno_mot-tiny_1xb8-iter200_shapes.py'
BASELINE_ITERS = 12


def baseline_options(iters: int, batch: int, checkpoint_interval: int):
    """``--cfg-options`` of a short UNO run logged at every step (no
    validation before the last step; the schedule does not depend on
    ``max_iters``, so a run's first steps are a longer run's)."""
    return [
        '--cfg-options', f'train_cfg.max_iters={iters}',
        'train_cfg.val_interval=1000', 'default_hooks.logger.interval=1',
        'log_processor.window_size=1', f'train_dataloader.batch_size={batch}',
        f'default_hooks.checkpoint.interval={checkpoint_interval}'
    ]


@pytest.fixture(scope='session')
def baseline_run(tmp_path_factory, request):
    """The work dir of a one-process ``tools/train.py`` run of the UNO
    baseline, batch 4, ``BASELINE_ITERS`` iterations, a row logged and a
    checkpoint kept at every iteration (its own MLflow store).

    The reference of the DDP, FSDP, accumulation and resume tests, which
    compare their runs with its rows and ``iter_N.pth`` at the steps they
    train: run once per test session, by the first pytest-xdist worker
    that asks (another waits on a file lock), in-process. Read it, never
    write into it.
    """
    from filelock import FileLock

    from tests.tools import run_tool
    root = tmp_path_factory.getbasetemp()
    if hasattr(request.config, 'workerinput'):  # a pytest-xdist worker:
        root = root.parent  # the session's folder, shared by the workers
    work = root / 'baseline_run'
    with FileLock(str(root / 'baseline_run.lock')):
        if not (work / 'complete').exists():
            if work.exists():  # an earlier attempt failed
                shutil.rmtree(work)
            code, _, err = run_tool(
                'train', [BASELINE, '--work-dir', str(work),
                          *baseline_options(BASELINE_ITERS, 4, 1),
                          'default_hooks.checkpoint.max_keep_ckpts=-1'],
                env=dict(MLFLOW_TRACKING_URI=mlflow_store(
                    root / 'baseline_run_mlflow.db')))
            assert code == 0, err[-3000:]
            (work / 'complete').write_text('')
    return work


@pytest.fixture(autouse=True)
def _reset_mmengine_singletons():
    yield
    reset_mmengine_singletons()


@pytest.fixture
def tokenizer():
    return TinyTokenizer()


def t2i_sample(prompt_len=3, image_size=8, seed=0, caption_len=0,
               num_queries=0, mq_sees_caption=False):
    """A T2I plan, optionally with UNO's caption and metaquery segments."""
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(3, image_size, image_size, generator=g) * 2 - 1
    prompt = [BOS] + list(range(10, 10 + prompt_len)) + [EOS]
    segs = [
        Segment('text', tokens=prompt),
        Segment('noisy_latent', image=0, markers=(VS, VE), loss=True),
    ]
    if caption_len:
        cap = [BOS] + list(range(20, 20 + caption_len)) + [EOS]
        segs.append(Segment('caption', tokens=cap, sees=(1, ), loss=True))
    if num_queries:
        sees = (1, 2) if (mq_sees_caption and caption_len) else (1, )
        segs.append(Segment('metaquery', num_queries=num_queries,
                            sees=sees, loss=True, target_image=0))
    return SequencePlan(segs, images=[image], meta=dict(index=seed))


@pytest.fixture
def tiny_model_cfg():
    return dict(
        type='UnoModel',
        llm=dict(vocab_size=32, hidden_size=32, num_layers=2, num_heads=4,
                 num_kv_heads=2, intermediate_size=64),
        latent_encoder=dict(type='PixelPatchifier', patch_size=4),
        attention=dict(type='sdpa'))


@pytest.fixture
def uno_model_cfg(tiny_model_cfg):
    """The tiny model with a tiny ViT, 4 metaqueries, frozen und side."""
    return dict(
        tiny_model_cfg,
        und_encoder=dict(type='TimmViTEncoder',
                         config=dict(img_size=8, patch_size=4, embed_dim=16,
                                     depth=1, num_heads=2)),
        metaquery=dict(num_queries=4),
        freeze=dict(und=True, embed_tokens=True, lm_head=True,
                    und_encoder=True, connector=True))


UNO_OBJECTIVES = dict(
    flow=dict(type='FlowMatchingObjective', weight=1.0),
    caption=dict(type='CaptioningObjective', weight=1.0),
    regression=dict(type='VisualRegressionObjective', weight=1.0))
