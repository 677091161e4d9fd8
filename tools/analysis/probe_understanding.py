"""Probe how well a checkpoint's understanding path describes ShapesWorld.

    python tools/analysis/probe_understanding.py CONFIG CHECKPOINT
        [--num-images 256] [--seed 0] [--out probe.json] [--plot probe.png]
        [--timesteps 0 0.25 0.5 0.75 1] [--batch-size 32]
        [--max-new-tokens 32] [--examples 3] [--cfg-options k=v ...]

Captions are decoded greedily, for the same ``--num-images`` test-split
scenes (``ShapesWorld(seed=--seed)``, indices ``0..N-1``, rendered at the
config's image size), from two views of each image:

* ``clean``: the understanding encoder's (ViT) tokens of the clean image,
  the understanding-stage plan ``[<vs> ViT tokens <ve>, <bos> caption]``;
* ``latent``: the generation expert's latent tokens of the image noised to
  each ``t`` in ``--timesteps``, read by the und expert: the path UNO's
  caption loss travels, ``[<vs> noisy latents <ve>, <bos> caption]`` with
  the caption seeing only the image. The flow convention of the code
  (:class:`uno.objectives.FlowMatchingObjective`) is ``x_t = (1 - t) x_0 +
  t eps``: **t = 0 is the clean latent** (identical to the plan of
  ``ShapesWorldCaptionDataset(latent_fraction=1)``) and t = 1 pure noise.
  One noise draw per image (from ``--seed``) serves every ``t``.

Every caption is parsed back and scored against its scene by
:func:`uno.evaluation.score_caption`; per view the tool reports the mean
over images of

* ``shape`` / ``color`` / ``size``: fraction of scene objects matched to a
  parsed object of the right shape / colour / stated size;
* ``count``: the caption states as many objects as the scene holds
  (``object_count_acc``; shape-independent, unlike the benchmark's
  per-shape ``count_acc``, which a wrong shape word also zeroes);
* ``relation``: over the position scenes only, the stated relation is
  right (both objects correctly described and matched);
* ``exact``: every object right, nothing extra, relation right.

It prints a table, writes a PNG of accuracy against ``t`` (the clean view
as dashed horizontal lines; ``--plot``, default next to ``--out`` or
``work_dirs/probe_understanding/<checkpoint stem>.png``) and, with
``--out``, a JSON ``{"clean": {attr: acc}, "latent": {"0.0": {attr:
acc}, ...}}``.

CHECKPOINT is a ``.safetensors`` file of model weights (the shipped
checkpoint, or ``tools/misc/export_weights.py`` output) or a training
``.pth`` (loaded inert); the weights must cover the model the config
builds (metaqueries and objective heads may be absent).
"""
import json
import os
import os.path as osp
import sys
from typing import Dict, List, Optional, Sequence

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from _cli import (ArgumentParser, cfg_options_action,  # noqa: E402
                  load_config, run_cli)

ATTRIBUTES = ('shape', 'color', 'size', 'count', 'relation', 'exact')
TIMESTEPS = (0.0, 0.25, 0.5, 0.75, 1.0)
# score_caption's key of each attribute
_KEYS = dict(shape='shape_acc', color='color_acc', size='size_acc',
             count='object_count_acc', relation='relation_acc',
             exact='exact')


def parse_args(argv=None):
    parser = ArgumentParser(
        description='Per-attribute caption accuracy of the understanding '
        'path, from ViT tokens and from noisy generation latents')
    parser.add_argument('config', help='config file (its model is built)')
    parser.add_argument('checkpoint',
                        help='.safetensors model weights or a training .pth')
    parser.add_argument('--num-images', type=int, default=256)
    parser.add_argument('--seed', type=int, default=0,
                        help='world seed of the scenes and noise seed')
    parser.add_argument('--timesteps', type=float, nargs='+',
                        default=list(TIMESTEPS),
                        help='t of the latent view (0 = clean)')
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--max-new-tokens', type=int, default=32)
    parser.add_argument('--examples', type=int, default=3,
                        help='captions printed per view')
    parser.add_argument('--out', help='write the accuracies as JSON')
    parser.add_argument('--plot', help='PNG of accuracy against t')
    parser.add_argument('--no-plot', action='store_true')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--cfg-options', nargs='+',
                        action=cfg_options_action(),
                        help='override config keys')
    parser.add_argument('--debug', action='store_true')
    return parser.parse_args(argv)


# --- model ---------------------------------------------------------------
def build_model(cfg, checkpoint: Optional[str] = None):
    """The config's :class:`UnoModel` with ``checkpoint``'s weights, in
    eval mode. ``pretrained_llm`` is dropped: the checkpoint has them all.
    """
    import uno.models  # noqa: F401  (registers the components)
    from uno.registry import MODELS
    model_cfg = cfg['model'].copy() if hasattr(cfg, 'copy') else dict(
        cfg['model'])
    model_cfg.pop('pretrained_llm', None)
    model = MODELS.build(model_cfg)
    if checkpoint is not None:
        from uno.engine.weights import load_model_file
        load_model_file(model, checkpoint)  # .safetensors or a .pth, inert
    return model.eval()


def build_tokenizer(cfg, model):
    from uno.datasets.builder import build_tokenizer as build
    tok = cfg.get('tokenizer')
    if tok is None:
        tok = dict(type='WordTokenizer', vocab_size=model.cfg.vocab_size)
    return build(tok)


def image_size_of(cfg, default: int = 32) -> int:
    """The render size of the config's test (else train) ShapesWorld."""
    for key in ('test_dataloader', 'val_dataloader', 'train_dataloader'):
        size = ((cfg.get(key) or {}).get('dataset') or {}).get('image_size')
        if size:
            return int(size)
    return default


# --- captioning ------------------------------------------------------------
def caption_clean(model, images, tokenizer, captioner) -> List[List[int]]:
    """Greedy captions from the understanding encoder's view."""
    return captioner.caption(model, images, tokenizer, mode='vit')


def caption_noisy(model, images, tokenizer, captioner, t: float,
                  noise) -> List[List[int]]:
    """Greedy captions read by the und expert from ``x_t = (1 - t) x_0 + t
    noise`` of the generation expert (``noise`` ``(I, N, C)``), with the
    noisy image's timestep embedding, as UNO's caption segment reads it.
    """
    import torch

    from uno.structures.packing import pack_sequences
    from uno.models.sampling.packed_cache import model_device_dtype
    from uno.structures import NoisyLatents, Segment, SequencePlan
    device, _ = model_device_dtype(model)
    num = images.shape[0]
    x0 = model.encode_latents(images.to(device))  # (I, N, C)
    xt = ((1 - t) * x0 + t * noise.to(x0)).flatten(0, 1)  # (I * N, C)
    markers = (tokenizer.vision_start_id, tokenizer.vision_end_id)
    stride = model.latent_encoder.stride

    def pack(captions):
        plans = [SequencePlan([
            Segment('noisy_latent', image=0, markers=markers),
            Segment('caption', tokens=[tokenizer.bos_id] + list(c),
                    sees=(0, ))
        ], images=[image.cpu()]) for image, c in zip(images, captions)]
        return pack_sequences(plans, latent_stride=stride)

    noisy = NoisyLatents(xt, torch.full((num, ), float(t), device=device))
    return captioner._cached(model, pack, num, tokenizer.eos_id, None,
                             noisy)


def make_noise(num: int, tokens: int, channels: int, seed: int):
    """One fixed ``(num, tokens, channels)`` noise draw per image."""
    import torch
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randn((num, tokens, channels), generator=gen)


# --- scoring ---------------------------------------------------------------
def aggregate(scores: Sequence[Dict]) -> Dict[str, float]:
    """Mean of each attribute over the images where it applies (NaN when
    it applies to none, e.g. relation without position scenes)."""
    import numpy as np
    out = {}
    for attr in ATTRIBUTES:
        vals = [s[_KEYS[attr]] for s in scores
                if s.get(_KEYS[attr]) is not None]
        out[attr] = float(np.mean(vals)) if vals else float('nan')
    return out


def score_texts(texts: Sequence[str], scenes, with_size: bool) -> List[Dict]:
    from uno.evaluation import score_caption
    return [score_caption(t, s, with_size=with_size)
            for t, s in zip(texts, scenes)]


def probe(model, tokenizer, num_images: int = 256, seed: int = 0,
          timesteps: Sequence[float] = TIMESTEPS, batch_size: int = 32,
          max_new_tokens: int = 32, image_size: int = 32,
          progress: bool = True, captions_out: Optional[dict] = None
          ) -> Dict:
    """Accuracies of the clean (ViT) view and the latent view at each t.

    Args:
        model (UnoModel): In eval mode, with an ``und_encoder``.
        tokenizer: The config's tokenizer.
        num_images (int): Test scenes ``0..N-1`` of ``ShapesWorld(seed)``.
        seed (int): World seed and noise seed.
        timesteps (Sequence[float]): Noise levels of the latent view.
        batch_size (int): Images captioned together.
        max_new_tokens (int): Caption length limit.
        image_size (int): Render size.
        progress (bool): Show a tqdm bar over images.
        captions_out (dict, optional): Filled with the decoded captions,
            ``{'clean': [...], '0.0': [...], ...}``.

    Returns:
        dict: ``{'clean': {attr: acc}, 'latent': {str(t): {attr: acc}}}``.
    """
    import torch
    from tqdm import tqdm

    from uno.datasets.builder import to_tensor_image
    from uno.datasets.shapesworld import ShapesWorld
    from uno.models.sampling import Captioner
    world = ShapesWorld(image_size=image_size, seed=seed)
    scenes = [world.scene(i, 'test') for i in range(num_images)]
    captioner = Captioner(max_new_tokens=max_new_tokens)
    keys = [f'{float(t)}' for t in timesteps]
    texts = {k: [] for k in ['clean'] + keys}
    bar = tqdm(total=num_images * (1 + len(keys)), unit='img',
               desc='probe', disable=not progress, dynamic_ncols=True)
    noise = None
    with torch.no_grad():
        for start in range(0, num_images, batch_size):
            chunk = scenes[start:start + batch_size]
            images = torch.stack(
                [to_tensor_image(world.render(s)) for s in chunk])
            if noise is None:  # fixed per image, whatever the batching
                shape = model.encode_latents(images[:1]).shape
                noise = make_noise(num_images, shape[1], shape[2], seed)
            ids = caption_clean(model, images, tokenizer, captioner)
            texts['clean'] += [tokenizer.decode(c) for c in ids]
            bar.update(len(chunk))
            for t, key in zip(timesteps, keys):
                ids = caption_noisy(model, images, tokenizer, captioner,
                                    float(t),
                                    noise[start:start + len(chunk)])
                texts[key] += [tokenizer.decode(c) for c in ids]
                bar.update(len(chunk))
    bar.close()
    if captions_out is not None:
        captions_out.update(texts)
        captions_out['scenes'] = scenes
    score = {k: aggregate(score_texts(v, scenes, world.with_size))
             for k, v in texts.items()}
    return dict(clean=score['clean'],
                latent={k: score[k] for k in keys})


# --- output ----------------------------------------------------------------
def format_table(result: Dict) -> str:
    rows = [('clean (ViT)', result['clean'])]
    rows += [(f'latent t={k}', v) for k, v in result['latent'].items()]
    head = f"{'view':<16}" + ''.join(f'{a:>10}' for a in ATTRIBUTES)
    lines = [head, '-' * len(head)]
    for name, accs in rows:
        lines.append(f'{name:<16}' + ''.join(
            f'{accs[a]:>10.3f}' for a in ATTRIBUTES))
    return '\n'.join(lines)


def plot(result: Dict, path: str, title: str = '') -> None:
    """Accuracy against t per attribute; clean view as dashed lines."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    ts = [float(k) for k in result['latent']]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, attr in enumerate(ATTRIBUTES):
        color = f'C{i}'
        ax.plot(ts, [result['latent'][k][attr] for k in result['latent']],
                marker='o', color=color, label=attr)
        ax.axhline(result['clean'][attr], color=color, linestyle='--',
                   linewidth=1, alpha=0.8)
    ax.set_xlabel('t of the latent view (0 = clean latents, 1 = noise)')
    ax.set_ylabel('accuracy')
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title or 'understanding probe (dashed: ViT view)',
                 fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=3, loc='lower left')
    fig.tight_layout()
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)

    def _run():
        import torch

        from uno.errors import UnoConfigError
        if args.num_images < 1 or args.batch_size < 1:
            raise UnoConfigError('--num-images and --batch-size must be >= 1')
        if any(not 0 <= t <= 1 for t in args.timesteps):
            raise UnoConfigError('--timesteps must lie in [0, 1]')
        cfg = load_config(args.config, args.cfg_options)
        torch.manual_seed(args.seed)
        model = build_model(cfg, args.checkpoint).to(args.device)
        tokenizer = build_tokenizer(cfg, model)
        captions = {}
        result = probe(model, tokenizer, args.num_images, args.seed,
                       args.timesteps, args.batch_size, args.max_new_tokens,
                       image_size_of(cfg), captions_out=captions)
        print(f'\n{args.checkpoint}: {args.num_images} test scenes, '
              f'seed {args.seed}')
        print(format_table(result))
        if args.examples:
            scenes = captions['scenes']
            from uno.datasets.shapesworld import captions as text
            print('\nexamples (reference | clean | latent t=0):')
            first = f'{float(args.timesteps[0])}'
            for i in range(min(args.examples, args.num_images)):
                print(f'  {text.captions(scenes[i])[0]} | '
                      f'{captions["clean"][i]} | {captions[first][i]}')
        if args.out:
            os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
            with open(args.out, 'w') as f:
                json.dump(result, f, indent=2)
            print(f'\naccuracies written to {args.out}')
        if not args.no_plot:
            path = args.plot or (
                osp.splitext(args.out)[0] + '.png' if args.out else osp.join(
                    'work_dirs', 'probe_understanding',
                    osp.splitext(osp.basename(args.checkpoint))[0] + '.png'))
            stem = osp.splitext(osp.basename(args.checkpoint))[0]
            plot(result, path, f'{stem}: understanding probe '
                 f'({args.num_images} images; dashed: ViT view)')
            print(f'plot written to {path}')

    run_cli(_run, args.debug)


if __name__ == '__main__':
    main()
