"""Models, batches, timers and memory meters of tools/analysis/benchmark.py.

Not part of the package: the benchmark tool's helpers. Everything is built
from a preset (:data:`PRESETS`), randomly initialised (speed does not
depend on the weights) and fed ShapesWorld data or synthetic plans of the
same layout.
"""
import os
import time
import weakref
from functools import partial
from typing import Callable, Dict, List, Optional

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from uno.datasets import ShapesWorldT2IDataset, pack_sequences
from uno.engine.trainer import UnoTrainer
from uno.structures import Segment, SequencePlan

BOS, EOS, VS, VE = 1, 2, 4, 5  # WordTokenizer's special ids

_CPU = dict(
    llm=dict(vocab_size=128, hidden_size=512, num_layers=8, num_heads=8,
             num_kv_heads=4, intermediate_size=1536, qkv_bias=True,
             qk_norm=False),
    vit=dict(img_size=32, patch_size=4, embed_dim=96, depth=3, num_heads=4),
    image_size=32, patch=4, samples=20, peer=(16, 128), spread=(13, 80),
    sampling=dict(batch=4, prompt=32, steps=25), data_batches=10,
    repeats=3)
PRESETS = dict(
    # >= hidden 512, 8 layers, packed sequences of about 2k tokens
    cpu=_CPU,
    # Qwen2.5-0.5B shapes per expert: ~0.5B active parameters, bf16
    gpu=dict(
        llm=dict(vocab_size=151936, hidden_size=896, num_layers=24,
                 num_heads=14, num_kv_heads=2, intermediate_size=4864,
                 rope_theta=1e6, qkv_bias=True, qk_norm=False),
        vit=dict(img_size=64, patch_size=8, embed_dim=384, depth=6,
                 num_heads=6),
        image_size=64, patch=4, samples=32, peer=(32, 320),
        spread=(24, 270), sampling=dict(batch=16, prompt=32, steps=25),
        data_batches=10, repeats=5),
    # seconds on a CPU: the end-to-end test of the tool
    quick=dict(
        _CPU, llm=dict(_CPU['llm'], hidden_size=64, num_layers=2,
                       num_heads=4, num_kv_heads=2, intermediate_size=128),
        vit=dict(_CPU['vit'], embed_dim=32, depth=1), samples=4,
        peer=(4, 96), spread=(4, 70),
        sampling=dict(batch=2, prompt=32, steps=25), data_batches=2,
        repeats=1))
UNO_FREEZE = dict(und=True, embed_tokens=True, lm_head=True,
                  und_encoder=True, connector=True, latent_encoder=True)
UNO_OBJECTIVES = dict(
    flow=dict(type='FlowMatchingObjective'),
    caption=dict(type='CaptioningObjective'),
    regression=dict(type='VisualRegressionObjective', weight=0.5))


def model_cfg(preset: dict, uno_side: bool, attention: dict) -> dict:
    """UnoModel config: with ``uno_side`` the UNO/SFT model (ViT, 16
    metaqueries, understanding side frozen as the configs freeze it),
    else a plain MoT with every expert trainable (the dense peer's twin).
    """
    cfg = dict(type='UnoModel', llm=dict(preset['llm']),
               latent_encoder=dict(type='PixelPatchifier',
                                   patch_size=preset['patch']),
               attention=attention)
    if uno_side:
        cfg.update(und_encoder=dict(type='TimmViTEncoder',
                                    config=dict(preset['vit'])),
                   metaquery=dict(num_queries=16), freeze=UNO_FREEZE)
    return cfg


def build_trainer(preset: dict, objectives: dict, uno_side: bool,
                  attention: dict, device) -> UnoTrainer:
    torch.manual_seed(0)
    trainer = UnoTrainer(model_cfg(preset, uno_side, attention), objectives)
    with torch.no_grad():  # a non-zero velocity head (zero-initialised)
        torch.nn.init.normal_(trainer.model.llm2vae.weight, std=0.02)
    return trainer.to(device)


def optim_wrapper(module: torch.nn.Module):
    """mmengine's OptimWrapper over AdamW on the trainable parameters."""
    from mmengine.optim import OptimWrapper
    params = [p for p in module.parameters() if p.requires_grad]
    return OptimWrapper(torch.optim.AdamW(params, lr=1e-5))


def shapes_dataset(preset: dict, uno: bool) -> ShapesWorldT2IDataset:
    return ShapesWorldT2IDataset(
        num_samples=100000, image_size=preset['image_size'],
        uno=dict(caption=True, num_queries=16) if uno else None)


def collate(preset: dict) -> Callable:
    return partial(pack_sequences, latent_stride=preset['patch'],
                   vit_stride=preset['vit']['patch_size'])


def shapes_batch(preset: dict, uno: bool):
    """The first ``samples`` ShapesWorld samples, UNO or flow-only plans."""
    ds = shapes_dataset(preset, uno)
    return collate(preset)([ds[i] for i in range(preset['samples'])])


def t2i_plans(preset: dict, lengths: List[int], pad_to: int = 0,
              seed: int = 0) -> List[SequencePlan]:
    """Text-to-image plans of exactly ``lengths`` tokens (random prompt ids
    around a ShapesWorld-sized image). With ``pad_to``, each plan gets a
    trailing text segment of pad ids up to ``pad_to`` tokens: the padded
    batch, whose real tokens compute exactly what they compute unpadded
    (nothing sees a later segment)."""
    g = torch.Generator().manual_seed(seed)
    side = preset['image_size']
    image_tokens = (side // preset['patch'])**2 + 2
    plans = []
    for length in lengths:
        words = length - image_tokens - 2
        if words < 0:
            raise ValueError(f'a {length}-token sample cannot hold a '
                             f'{image_tokens}-token image')
        ids = torch.randint(6, preset['llm']['vocab_size'], (words, ),
                            generator=g).tolist()
        segments = [Segment('text', tokens=[BOS] + ids + [EOS]),
                    Segment('noisy_latent', image=0, markers=(VS, VE),
                            loss=True)]
        if pad_to > length:
            segments.append(Segment('text', tokens=[0] * (pad_to - length)))
        image = torch.rand(3, side, side, generator=g) * 2 - 1
        plans.append(SequencePlan(segments, images=[image]))
    return plans


def hf_peer(preset: dict, device):
    """transformers' Qwen2ForCausalLM with one expert's per-token shapes."""
    from transformers import Qwen2Config, Qwen2ForCausalLM
    llm = preset['llm']
    config = Qwen2Config(
        vocab_size=llm['vocab_size'], hidden_size=llm['hidden_size'],
        intermediate_size=llm['intermediate_size'],
        num_hidden_layers=llm['num_layers'],
        num_attention_heads=llm['num_heads'],
        num_key_value_heads=llm['num_kv_heads'],
        rope_theta=llm.get('rope_theta', 10000.0), rms_norm_eps=1e-6,
        max_position_embeddings=4096, tie_word_embeddings=False)
    config._attn_implementation = 'sdpa'
    torch.manual_seed(0)
    return Qwen2ForCausalLM(config).to(device).train()


# --------------------------------------------------------------------------
def sync(device) -> None:
    if torch.device(device).type == 'cuda':
        torch.cuda.synchronize()


def autocast(device):
    """bf16 autocast on CUDA, nothing (fp32) on the CPU."""
    if torch.device(device).type == 'cuda':
        return torch.autocast('cuda', dtype=torch.bfloat16)
    return torch.autocast('cpu', enabled=False)


def interleaved(fns: Dict[str, Callable], repeats: int, device,
                warmup: int = 1) -> Dict[str, List[float]]:
    """Wall times of each callable, taking turns round by round so that a
    change of machine load hits every contender alike. The first
    ``warmup`` rounds are not recorded."""
    times = {name: [] for name in fns}
    for r in range(warmup + repeats):
        for name, fn in fns.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            if r >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def peak_matmul(device, dtype, sizes=(1024, 2048), repeats=3) -> dict:
    """Best FLOP/s of square matmuls on ``device`` in ``dtype``."""
    best = dict(flops=0.0, size=0)
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        a @ b
        for _ in range(repeats):
            sync(device)
            start = time.perf_counter()
            a @ b
            sync(device)
            rate = 2 * n**3 / (time.perf_counter() - start)
            if rate > best['flops']:
                best = dict(flops=rate, size=n)
    return best


class LiveTensorMemory(TorchDispatchMode):
    """Peak bytes of tensor storages created while the mode is active.

    Every operator's outputs are seen; a storage counts from the operator
    that created it until it is freed (a weak reference's callback), so
    the peak is that of live tensor memory, like CUDA's
    ``max_memory_allocated``, on any device. Storages that existed before
    (parameters, optimizer state, the batch) are excluded; kernel-internal
    workspaces that never become tensors are not seen.
    """

    def __init__(self, *existing):
        super().__init__()
        self.known = set()
        self.keep = []
        for item in existing:
            for t in _tensors(item):
                st = t.untyped_storage()
                self.keep.append(st)
                self.known.add(id(st))
        self.live = {}
        self.current = self.peak = 0

    def _freed(self, key, nbytes, _ref):
        self.live.pop(key, None)
        self.current -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in _flat_tensors(out):
            st = t.untyped_storage()
            key = id(st)
            if key in self.known or key in self.live:
                continue
            nbytes = st.nbytes()
            self.live[key] = weakref.ref(st, partial(self._freed, key,
                                                     nbytes))
            self.current += nbytes
            self.peak = max(self.peak, self.current)
        return out


def _flat_tensors(out):
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _flat_tensors(o)]
    return []


def _tensors(item):
    """Tensors of a module (parameters, buffers, gradients), an optimizer
    (its state) or a packed batch."""
    if isinstance(item, torch.nn.Module):
        for p in item.parameters():
            yield p
            if p.grad is not None:
                yield p.grad
        yield from item.buffers()
    elif isinstance(item, torch.optim.Optimizer):
        for state in item.state.values():
            yield from (v for v in state.values()
                        if isinstance(v, torch.Tensor))
    elif hasattr(item, '__dataclass_fields__'):
        for name in item.__dataclass_fields__:
            value = getattr(item, name)
            if isinstance(value, torch.Tensor):
                yield value


def persistent_bytes(*items) -> int:
    """Bytes of the distinct storages held by modules, optimizers and
    batches (the memory a step starts from)."""
    seen = {}
    for item in items:
        for t in _tensors(item):
            st = t.untyped_storage()
            seen[st.data_ptr()] = st.nbytes()
    return sum(seen.values())


def step_memory(step: Callable, device, *existing) -> Optional[dict]:
    """Peak memory of one call of ``step``: persistent state plus the peak
    of what the step allocates. CUDA: the allocator's peak; elsewhere
    :class:`LiveTensorMemory`."""
    base = persistent_bytes(*existing)
    if torch.device(device).type == 'cuda':
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        step()
        sync(device)
        extra = torch.cuda.max_memory_allocated(device) - start
        method = 'torch.cuda.max_memory_allocated'
    else:
        meter = LiveTensorMemory(*existing)
        with meter:
            step()
        extra, method = meter.peak, 'LiveTensorMemory (dispatch mode)'
    return dict(persistent=base, step_peak=extra, total=base + extra,
                method=method)


def machine() -> dict:
    """What the figures were measured on."""
    import platform
    info = dict(platform=platform.platform(), python=platform.python_version(),
                torch=torch.__version__, threads=torch.get_num_threads(),
                cpus=os.cpu_count(), load_avg=list(os.getloadavg()))
    try:
        with open('/proc/cpuinfo') as f:
            names = [ln.split(':', 1)[1].strip() for ln in f
                     if ln.startswith('model name')]
        info['cpu'] = names[0] if names else platform.processor()
    except OSError:
        info['cpu'] = platform.processor()
    if torch.cuda.is_available():
        info['gpu'] = torch.cuda.get_device_name()
    return info
