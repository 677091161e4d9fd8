"""PCA pictures of the generation expert's hidden states over the latent grid.

    python tools/analysis/pca_hidden.py CONFIG CKPT_A [CKPT_B ...]
        [--names SFT UNO] [--timesteps 0.2 0.4 0.6 0.9] [--prompts 4]
        [--layer L] [--seed 0] [--out PNG] [--cfg-options k=v ...]

For the first ``--prompts`` ShapesWorld test scenes (``ShapesWorld(seed=
--seed)``, indices ``0..N-1``, GenEval-style prompts, rendered at the
config's image size: deterministic) the tool builds the text-to-image
sequence ``[<bos> prompt <eos>, <vs> x_t <ve>]`` with the clean render
noised to each ``t`` as the flow objective does, ``x_t = (1 - t) x_0 +
t eps`` (t = 0 clean, t = 1 noise; one fixed ``eps`` per prompt from
``--seed``, shared by every ``t`` and checkpoint), runs every checkpoint
on it and takes the output of decoder layer ``--layer`` (1-based; default
the middle layer) at the noisy latent positions: the gen expert's hidden
states ``(h * w, D)`` over the ``h x w`` latent grid.

One PCA (3 components) is fitted per (prompt, t) jointly over the
checkpoints, so a colour means the same direction in every row; the
components, scaled to [0, 1] jointly (1st-99th percentile), are drawn as
RGB. Figure: one block per prompt, rows = checkpoints, first column the
clean render, then one column per ``t``. The printed table gives, per
checkpoint and ``t``, the share of its hidden-state variance (around the
joint mean) that the joint 3 components capture, averaged over prompts.

Checkpoints: exported ``.safetensors`` model weights (the shipped one;
``tools/misc/export_weights.py`` makes one) or training ``.pth`` files
(read with :func:`uno.engine.checkpoint.load_checkpoint_file`, which
never runs code from the file). Objective heads are ignored; metaqueries
may be missing (they do not take part in this sequence).
"""
import os
import os.path as osp
import sys
import textwrap
from typing import Dict, List, Optional, Sequence

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from _cli import (ArgumentParser, cfg_options_action,  # noqa: E402
                  load_config, run_cli)

TIMESTEPS = (0.2, 0.4, 0.6, 0.9)


def parse_args(argv=None):
    parser = ArgumentParser(
        description='PCA of the gen expert\'s hidden states on the latent '
        'grid, checkpoints side by side')
    parser.add_argument('config', help='config file (its model is built)')
    parser.add_argument('checkpoints', nargs='+',
                        help='.safetensors or .pth files')
    parser.add_argument('--names', nargs='+', help='row names')
    parser.add_argument('--timesteps', type=float, nargs='+',
                        default=list(TIMESTEPS))
    parser.add_argument('--prompts', type=int, default=4,
                        help='test scenes 0..N-1')
    parser.add_argument('--layer', type=int,
                        help='1-based decoder layer (default: middle)')
    parser.add_argument('--seed', type=int, default=0,
                        help='world seed and noise seed')
    parser.add_argument('--out', default='work_dirs/pca_hidden/pca.png')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--cfg-options', nargs='+',
                        action=cfg_options_action(),
                        help='override config keys')
    parser.add_argument('--debug', action='store_true')
    return parser.parse_args(argv)


# --- model -----------------------------------------------------------------
def build_model(cfg, checkpoint: str, device: str = 'cpu'):
    """The config's :class:`UnoModel` with ``checkpoint``'s weights, in
    eval mode (``pretrained_llm`` dropped: the checkpoint has them)."""
    import uno  # noqa: F401  (registers the components)
    from uno.engine.weights import load_model_file
    from uno.registry import MODELS
    model_cfg = dict(cfg['model'])
    model_cfg.pop('pretrained_llm', None)
    model = MODELS.build(model_cfg)
    load_model_file(model, checkpoint)
    return model.to(device).eval()


def image_size_of(cfg, default: int = 32) -> int:
    """The render size of the config's test (else val, train) data."""
    for key in ('test_dataloader', 'val_dataloader', 'train_dataloader'):
        size = ((cfg.get(key) or {}).get('dataset') or {}).get('image_size')
        if size:
            return int(size)
    return default


def prompt_plans(cfg, num: int, seed: int):
    """The T2I plans ``[prompt, noisy image]`` of test scenes ``0..N-1``
    (no prompt dropout, no UNO segments)."""
    from uno.datasets.shapesworld_t2i import ShapesWorldT2IDataset
    tok = cfg.get('tokenizer') or dict(
        type='WordTokenizer', vocab_size=cfg.model.llm.vocab_size)
    data = ShapesWorldT2IDataset(
        split='test', num_samples=num, image_size=image_size_of(cfg),
        seed=seed, tokenizer=tok, prompt_dropout=0.0)
    return [data[i] for i in range(num)]


# --- features --------------------------------------------------------------
def make_noise(shape: Sequence[int], seed: int, index: int):
    """The fixed ``eps`` of prompt ``index``: ``shape`` = ``(N, C)``."""
    import torch

    from uno.utils.seeding import derived_generator
    return torch.randn(tuple(shape), generator=derived_generator(seed, index))


def hidden_states(model, plans, timesteps: Sequence[float], layer: int,
                  noise: List) -> Dict:
    """Gen-expert hidden states of every prompt at every ``t``.

    Args:
        model (UnoModel): In eval mode.
        plans (list[SequencePlan]): T2I plans, one image each.
        timesteps (Sequence[float]): Noise levels.
        layer (int): 1-based decoder layer whose output is taken.
        noise (list[Tensor]): ``eps`` of each prompt, ``(N, C)``.

    Returns:
        dict: ``(prompt, t) -> (h, w, D)`` float tensors on the CPU.
    """
    import torch

    from uno.structures import NoisyLatents
    from uno.structures.packing import pack_sequences
    device = next(model.parameters()).device
    batch = pack_sequences(plans, latent_stride=model.latent_encoder.stride)
    batch = batch.to(device)
    x0 = model.encode_latents(batch.images[batch.noisy_images])  # (P, N, C)
    eps = torch.stack(noise).to(x0)  # (P, N, C)
    pos = batch.noisy_pos.cpu()  # (P * N, 2) rows and columns
    h, w = int(pos[:, 0].max()) + 1, int(pos[:, 1].max()) + 1
    out = {}
    with torch.no_grad():
        for t in timesteps:
            noisy = NoisyLatents(
                ((1 - t) * x0 + t * eps).flatten(0, 1),
                torch.full((len(plans), ), float(t), device=device))
            taps = model(batch, noisy, return_layers=(layer, )).layers[layer]
            feats = taps[batch.noisy_index].float().cpu()  # (P * N, D)
            group = batch.noisy_group.cpu()
            for p in range(len(plans)):
                sel = group == p
                grid = feats.new_zeros(h, w, feats.shape[-1])
                grid[pos[sel, 0], pos[sel, 1]] = feats[sel]
                out[(p, float(t))] = grid  # (h, w, D)
    return out


def joint_pca(grids: Sequence, k: int = 3):
    """One PCA over several ``(h, w, D)`` grids.

    Returns:
        tuple: RGB images ``(h, w, 3)`` in [0, 1] per grid (numpy), the
        joint explained-variance ratio of the ``k`` components, and per
        grid the share of its variance (around the joint mean) that they
        capture.
    """
    import numpy as np
    h, w, d = grids[0].shape
    x = np.concatenate([g.reshape(-1, d).numpy() for g in grids])
    x = x.astype(np.float64)  # (G * h * w, D)
    x = x - x.mean(0, keepdims=True)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    comps = vt[:k]  # (k, D)
    proj = x @ comps.T  # (G * h * w, k)
    lo, hi = np.percentile(proj, 1, axis=0), np.percentile(proj, 99, axis=0)
    rgb = np.clip((proj - lo) / np.maximum(hi - lo, 1e-12), 0, 1)
    if rgb.shape[1] < 3:
        rgb = np.pad(rgb, ((0, 0), (0, 3 - rgb.shape[1])))
    ratio = float((s[:k] ** 2).sum() / max((s ** 2).sum(), 1e-30))
    n = h * w
    shares = []
    for g in range(len(grids)):
        part = x[g * n:(g + 1) * n]
        total = float((part ** 2).sum())
        shares.append(float((proj[g * n:(g + 1) * n] ** 2).sum()) /
                      max(total, 1e-30))
    images = [rgb[g * n:(g + 1) * n].reshape(h, w, 3)
              for g in range(len(grids))]
    return images, ratio, shares


# --- figure ----------------------------------------------------------------
def plot(renders, prompts, names, timesteps, images, path: str,
         title: str = '') -> None:
    """Blocks of rows per prompt (one row per checkpoint), the clean
    render in the first column, one column per ``t``.

    ``images[(p, t)]`` is the list of RGB grids of the checkpoints.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    rows, cols = len(prompts) * len(names), 1 + len(timesteps)
    fig, axes = plt.subplots(rows, cols, squeeze=False,
                             figsize=(1.6 * cols + 1.6, 1.6 * rows + 0.6))
    for p, prompt in enumerate(prompts):
        for c, name in enumerate(names):
            r = p * len(names) + c
            ax = axes[r, 0]
            ax.imshow(renders[p], interpolation='nearest')
            label = f'{name}'
            if c == 0:
                label = textwrap.fill(prompt, 26) + f'\n\n{name}'
            ax.set_ylabel(label, fontsize=7, rotation=0, ha='right',
                          va='center', labelpad=4)
            for j, t in enumerate(timesteps):
                axes[r, 1 + j].imshow(images[(p, float(t))][c],
                                      interpolation='nearest')
                if r == 0:
                    axes[r, 1 + j].set_title(f't = {t:g}', fontsize=8)
            if r == 0:
                axes[r, 0].set_title('clean render', fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(cfg, checkpoints: Sequence[str], names: Sequence[str],
        timesteps: Sequence[float], num_prompts: int, layer: Optional[int],
        seed: int, out: str, device: str = 'cpu') -> Dict:
    """Compute the PCA pictures and write the figure.

    Returns:
        dict: ``layer``, ``prompts``, and ``share[name][t]`` (mean over
        prompts of the variance share of the joint components) and
        ``ratio[t]`` (their joint explained-variance ratio).
    """
    import numpy as np
    import torch

    from uno.datasets.builder import to_uint8_image
    plans = prompt_plans(cfg, num_prompts, seed)
    feats, depth = [], None
    for ckpt in checkpoints:
        model = build_model(cfg, ckpt, device)
        depth = len(model.decoder.layers)
        layer = layer or (depth + 1) // 2
        if not 1 <= layer <= depth:
            from uno.errors import UnoConfigError
            raise UnoConfigError(f'--layer {layer} is not in 1..{depth}')
        if not feats:
            tokens = model.encode_latents(plans[0].images[0][None]).shape
            noise = [make_noise(tokens[1:], seed, p)
                     for p in range(len(plans))]
        with torch.no_grad():
            feats.append(hidden_states(model, plans, timesteps, layer,
                                       noise))
        del model
    images, ratio, share = {}, {}, {n: {} for n in names}
    for p in range(len(plans)):
        for t in timesteps:
            key = (p, float(t))
            images[key], r, s = joint_pca([f[key] for f in feats])
            ratio.setdefault(float(t), []).append(r)
            for n, v in zip(names, s):
                share[n].setdefault(float(t), []).append(v)
    renders = [to_uint8_image(plan.images[0]) for plan in plans]
    prompts = [plan.meta['prompt'] for plan in plans]
    plot(renders, prompts, names, timesteps, images, out,
         f'PCA (3 components, joint over checkpoints) of the gen expert\'s '
         f'layer-{layer} hidden states on the latent grid; RGB = PC1-3')
    return dict(
        layer=layer, prompts=prompts,
        ratio={t: float(np.mean(v)) for t, v in ratio.items()},
        share={n: {t: float(np.mean(v)) for t, v in per.items()}
               for n, per in share.items()})


def main(argv=None):
    args = parse_args(argv)

    def _run():
        from uno.errors import UnoConfigError
        names = args.names or [osp.splitext(osp.basename(c))[0]
                               for c in args.checkpoints]
        if len(names) != len(args.checkpoints):
            raise UnoConfigError(f'--names has {len(names)} names for '
                                 f'{len(args.checkpoints)} checkpoints')
        if args.prompts < 1:
            raise UnoConfigError('--prompts must be >= 1')
        if any(not 0 <= t <= 1 for t in args.timesteps):
            raise UnoConfigError('--timesteps must lie in [0, 1]')
        cfg = load_config(args.config, args.cfg_options)
        res = run(cfg, args.checkpoints, names, args.timesteps,
                  args.prompts, args.layer, args.seed, args.out,
                  args.device)
        print(f"layer {res['layer']}, {args.prompts} prompts; variance "
              'share of the joint 3 components (mean over prompts):')
        head = f"{'':<16}" + ''.join(f'{f"t={t:g}":>9}'
                                     for t in args.timesteps)
        print(head)
        print(f"{'joint':<16}" + ''.join(
            f"{res['ratio'][float(t)]:>9.3f}" for t in args.timesteps))
        for n in names:
            print(f'{n[:16]:<16}' + ''.join(
                f"{res['share'][n][float(t)]:>9.3f}"
                for t in args.timesteps))
        print(f'figure written to {args.out}')

    run_cli(_run, args.debug)


if __name__ == '__main__':
    main()
