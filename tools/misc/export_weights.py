"""Export the model weights of a training checkpoint to one safetensors file.

    python tools/misc/export_weights.py CHECKPOINT OUT.safetensors
        [--expert-only {und,gen}] [--with-objectives] [--dtype bf16]
        [--include GLOB ...] [--exclude GLOB ...] [--chunk-mb N] [--quiet]

CHECKPOINT is a plain mmengine ``.pth`` file or a sharded FSDP checkpoint
folder (``iter_N.pth/``, see :mod:`uno.engine.sharded_checkpoint`). The
file holds the :class:`UnoModel` weights under their own names (no
``model.`` prefix of the trainer), so
:func:`uno.engine.weights.load_model_weights` loads it into a model
built from the config, and ``load_from=OUT.safetensors`` starts a run
from it. The config the run was trained with is stored in the file's
metadata (``uno_config``).

* ``--expert-only und|gen``: only that expert's decoder weights
  (``decoder.layers.*.experts.<e>.*`` and ``decoder.norm.<e>.*``), e.g.
  the post-trained generation expert alone;
* ``--with-objectives``: add the objectives' heads (regression projector),
  named ``objectives.<objective>.<param>`` (``load_from`` maps them back;
  :func:`load_model_weights` into a bare model needs ``strict=False``);
* ``--include`` / ``--exclude``: shell patterns on the exported names;
* ``--dtype``: cast floating-point tensors (``bf16`` halves the file).

Tensors are read and written one at a time (a ``.pth`` is memory-mapped;
a sharded folder is read ``--chunk-mb`` at a time), so a BAGEL-size
checkpoint never has to fit in memory; nothing but the selected weights
(no optimizer state) is read.
"""
import json
import os
import os.path as osp
import re
import struct
import sys
from fnmatch import fnmatchcase
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from _cli import ArgumentParser, run_cli  # noqa: E402

import torch  # noqa: E402

from uno.errors import UnoConfigError  # noqa: E402

# safetensors dtype codes
ST_DTYPES = {
    torch.float64: 'F64', torch.float32: 'F32', torch.float16: 'F16',
    torch.bfloat16: 'BF16', torch.int64: 'I64', torch.int32: 'I32',
    torch.int16: 'I16', torch.int8: 'I8', torch.uint8: 'U8',
    torch.bool: 'BOOL', torch.float8_e4m3fn: 'F8_E4M3',
    torch.float8_e5m2: 'F8_E5M2'
}
CASTS = dict(bf16=torch.bfloat16, fp16=torch.float16, fp32=torch.float32)
EXPERTS = ('und', 'gen')
# the trainer's ObjectiveSet keeps its objectives in a ModuleDict
OBJECTIVES = 'objectives.objectives.'

Info = Dict[str, Tuple[Tuple[int, ...], torch.dtype]]
Reader = Callable[[Sequence[str]], Dict[str, torch.Tensor]]


def open_checkpoint(path: str) -> Tuple[Info, Reader, dict]:
    """Shapes and dtypes of the trainer's tensors, a reader, the meta.

    Returns:
        tuple: ``{trainer_name: (shape, dtype)}``, a function loading the
        named tensors, and the checkpoint's ``meta`` dict.
    """
    from uno.engine.sharded_checkpoint import (is_sharded_checkpoint,
                                               load_sharded_meta,
                                               read_sharded, sharded_tensors)
    if is_sharded_checkpoint(path):
        meta = load_sharded_meta(path).get('meta', {})
        return sharded_tensors(path), lambda n: read_sharded(path, n), meta
    from uno.engine.checkpoint import load_checkpoint_file
    if not osp.exists(path):
        raise UnoConfigError(f'checkpoint {path} does not exist (a .pth '
                             'file or a sharded checkpoint folder)')
    # inert, memory-mapped: tensors are read when written out
    ckpt = load_checkpoint_file(path, mmap=True)
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise UnoConfigError(f'{path} holds no state dict')
    state = {re.sub(r'^module\.', '', k): v for k, v in state.items()
             if torch.is_tensor(v)}
    if not any(k.startswith('model.') for k in state):
        state = {f'model.{k}': v for k, v in state.items()}  # bare model
    info = {k: (tuple(v.shape), v.dtype) for k, v in state.items()}
    meta = ckpt.get('meta', {}) if isinstance(ckpt, dict) else {}
    return info, lambda names: {n: state[n] for n in names}, meta


def select(names: Iterable[str],
           expert_only: Optional[str] = None,
           with_objectives: bool = False,
           include: Sequence[str] = (),
           exclude: Sequence[str] = ()) -> Dict[str, str]:
    """``{exported_name: trainer_name}`` of the tensors to export."""
    expert = re.compile(rf'decoder\.(layers\.\d+\.experts|norm)\.'
                        rf'{expert_only}\.') if expert_only else None
    out = {}
    for name in names:
        if name.startswith('model.'):
            new = name[len('model.'):]
        elif name.startswith(OBJECTIVES) and with_objectives:
            new = 'objectives.' + name[len(OBJECTIVES):]
        else:
            continue
        if expert is not None and not expert.match(new):
            continue
        if include and not any(fnmatchcase(new, p) for p in include):
            continue
        if any(fnmatchcase(new, p) for p in exclude):
            continue
        out[new] = name
    return dict(sorted(out.items()))


def _header(entries: List[Tuple[str, Tuple[int, ...], torch.dtype]],
            metadata: Dict[str, str]) -> Tuple[bytes, int]:
    """The safetensors header (8-byte size, padded JSON) and data size."""
    head, offset = {'__metadata__': metadata}, 0
    for name, shape, dtype in entries:
        size = dtype.itemsize
        for d in shape:
            size *= d
        head[name] = dict(dtype=ST_DTYPES[dtype], shape=list(shape),
                          data_offsets=[offset, offset + size])
        offset += size
    text = json.dumps(head, separators=(',', ':')).encode()
    text += b' ' * (-len(text) % 8)
    return struct.pack('<Q', len(text)) + text, offset


def export_weights(checkpoint: str,
                   out: str,
                   expert_only: Optional[str] = None,
                   with_objectives: bool = False,
                   dtype: Optional[str] = None,
                   include: Sequence[str] = (),
                   exclude: Sequence[str] = (),
                   chunk_mb: int = 1024,
                   progress: bool = True) -> Dict[str, int]:
    """Write the selected weights of ``checkpoint`` to ``out``.

    Returns:
        dict: ``tensors`` and ``bytes`` written.

    Raises:
        UnoConfigError: On a missing checkpoint or an empty selection.
    """
    from tqdm import tqdm
    info, read, meta = open_checkpoint(checkpoint)
    names = select(info, expert_only, with_objectives, include, exclude)
    if not names:
        raise UnoConfigError(f'no tensor of {checkpoint} matches the '
                             'selection (--expert-only/--include/--exclude)')
    cast = CASTS[dtype] if dtype else None

    def out_dtype(src: torch.dtype) -> torch.dtype:
        return cast if cast is not None and src.is_floating_point else src

    entries = [(n, info[t][0], out_dtype(info[t][1]))
               for n, t in names.items()]
    metadata = dict(format='pt', uno_source=osp.basename(
        osp.normpath(checkpoint)), uno_iter=str(meta.get('iter', '')),
                    uno_config=str(meta.get('cfg', '')))
    header, total = _header(entries, metadata)
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    tmp = f'{out}.partial'
    chunks, chunk, size = [], [], 0
    for name, shape, dt in entries:  # groups of about chunk_mb to read
        chunk.append(name)
        size += dt.itemsize * int(torch.Size(shape).numel())
        if size >= chunk_mb * 2**20:
            chunks.append(chunk)
            chunk, size = [], 0
    chunks += [chunk] if chunk else []
    bar = tqdm(total=total, unit='B', unit_scale=True, disable=not progress,
               desc=osp.basename(out))
    with open(tmp, 'wb') as f:
        f.write(header)
        for chunk in chunks:
            tensors = read([names[n] for n in chunk])
            for name in chunk:
                t = tensors.pop(names[name]).detach()
                t = t.to(out_dtype(t.dtype)).contiguous().reshape(-1)
                f.write(t.view(torch.uint8).numpy().data)
                bar.update(t.numel() * t.element_size())
        f.flush()
        os.fsync(f.fileno())
    bar.close()
    os.replace(tmp, out)
    return dict(tensors=len(entries), bytes=total)


def parse_args():
    parser = ArgumentParser(
        description='Export UnoModel weights to one safetensors file')
    parser.add_argument('checkpoint', help='.pth file or sharded folder')
    parser.add_argument('out', help='output .safetensors file')
    parser.add_argument('--expert-only', choices=EXPERTS,
                        help="only this expert's decoder weights")
    parser.add_argument('--with-objectives', action='store_true',
                        help='add the objective heads (objectives.*)')
    parser.add_argument('--dtype', choices=sorted(CASTS),
                        help='cast floating-point tensors')
    parser.add_argument('--include', nargs='+', default=(),
                        metavar='GLOB', help='keep only matching names')
    parser.add_argument('--exclude', nargs='+', default=(),
                        metavar='GLOB', help='drop matching names')
    parser.add_argument('--chunk-mb', type=int, default=1024,
                        help='read a sharded checkpoint this much at a time')
    parser.add_argument('--quiet', action='store_true', help='no progress')
    parser.add_argument('--debug', action='store_true',
                        help='show full tracebacks')
    return parser.parse_args()


def main():
    args = parse_args()

    def _run():
        if not args.out.endswith('.safetensors'):
            raise UnoConfigError(f'{args.out}: the output must end with '
                                 '.safetensors')
        done = export_weights(
            args.checkpoint, args.out, args.expert_only,
            args.with_objectives, args.dtype, args.include, args.exclude,
            args.chunk_mb, progress=not args.quiet)
        print(f"wrote {done['tensors']} tensors "
              f"({done['bytes'] / 2**20:.1f} MiB) to {args.out}")

    run_cli(_run, args.debug)


if __name__ == '__main__':
    main()
