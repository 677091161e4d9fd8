"""UnoModel: the one unified model (preprocess -> MoT backbone -> heads).

It embeds every token of a :class:`PackedBatch` by its kind (text ids,
noisy or clean latents with timestep and 2-D position, understanding-image
features through a connector, metaqueries), runs the MoT decoder with the
plan's mask, and returns named outputs (:class:`ModelOutputs`). It computes
no loss and samples no noise: that is the objectives' job
(:mod:`uno.objectives`), whose preparation draws the noisy latents and
timesteps (:class:`~uno.structures.NoisyLatents`) that the model is given
with the batch.
"""
from typing import Optional, Sequence

import torch
from mmengine.logging import MMLogger
from torch import Tensor, nn

from uno.registry import ATTENTION, ENCODERS, MODELS
from uno.structures import NoisyLatents, PackedBatch
from uno.utils.config_check import check_keys
from .embeddings import LatentGridStem, TimestepEmbedder, sincos_2d
from .metaquery import MetaQueryTokens
from .mot import MoTConfig, MoTDecoder, make_routes
from .mot.decoder import put_rows
from .outputs import ModelOutputs

#: parts that ``freeze`` can name, and what they cover
FREEZABLE = ('und', 'gen', 'embed_tokens', 'lm_head', 'latent_io',
             'time_embedder', 'metaquery', 'und_encoder', 'connector',
             'latent_encoder')


class MLPConnector(nn.Sequential):
    """Understanding features -> model width: Linear, GELU(tanh), Linear.
    """

    def __init__(self, in_dim: int, hidden_size: int):
        super().__init__(
            nn.Linear(in_dim, hidden_size), nn.GELU(approximate='tanh'),
            nn.Linear(hidden_size, hidden_size))


@MODELS.register_module()
class UnoModel(nn.Module):
    """A BAGEL-style unified model.

    Args:
        llm (dict): :class:`MoTConfig` fields.
        latent_encoder (dict): ENCODERS config of the latent encoder
            (``PixelPatchifier`` on the CPU world, a VAE for photos).
        und_encoder (dict, optional): ENCODERS config of the understanding
            encoder (a ViT); it embeds ``vit`` segments through an MLP
            connector and provides the regression targets. Defaults to
            None.
        attention (dict): ATTENTION config. Defaults to ``dict(type='sdpa')``.
        metaquery (dict): ``MetaQueryTokens`` arguments (``num_queries``).
            Defaults to ``dict(num_queries=0)``.
        freeze (dict): ``{part: bool}`` for parts in :data:`FREEZABLE`;
            frozen parts get ``requires_grad=False`` (activations stay
            differentiable). Defaults to freezing the latent encoder only.
        timestep_scale (float): See :class:`TimestepEmbedder`. Defaults to
            1000.0.
        latent_stem (dict, optional): :class:`LatentGridStem` arguments
            (``channels``, ``kernel``): convolutions over each image's
            latent grid, added to ``vae2llm``. Defaults to None (linear
            only, as BAGEL).
        pretrained_llm (dict, optional): Initialise the und expert,
            embeddings and lm_head from a local causal LM and copy the
            und expert into the gen expert (BAGEL's recipe): arguments of
            :func:`uno.models.external.pretrained.load_pretrained_llm`
            (``path``, ``gguf_file``, ``copy_to_gen``, ``strict_shapes``).
            Defaults to None.
    """
    config_schema = dict(llm=tuple(MoTConfig.__dataclass_fields__),
                         metaquery=('num_queries', 'init_std'),
                         freeze=FREEZABLE,
                         latent_stem=('channels', 'kernel'),
                         pretrained_llm=('path', 'gguf_file', 'copy_to_gen',
                                         'strict_shapes'))

    def __init__(self,
                 llm: dict,
                 latent_encoder: dict,
                 und_encoder: Optional[dict] = None,
                 attention: Optional[dict] = None,
                 metaquery: Optional[dict] = None,
                 freeze: Optional[dict] = None,
                 timestep_scale: float = 1000.0,
                 latent_stem: Optional[dict] = None,
                 pretrained_llm: Optional[dict] = None):
        super().__init__()
        self.cfg = MoTConfig.from_dict(dict(llm))
        d = self.cfg.hidden_size
        self.embed_tokens = nn.Embedding(self.cfg.vocab_size, d)
        self.decoder = MoTDecoder(self.cfg)
        self.lm_head = nn.Linear(d, self.cfg.vocab_size, bias=False)
        if self.cfg.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        self.latent_encoder = ENCODERS.build(latent_encoder)
        c = self.latent_encoder.latent_dim
        self.vae2llm = nn.Linear(c, d)
        self.llm2vae = nn.Linear(d, c)
        self.latent_stem = (None if latent_stem is None else
                            LatentGridStem(c, d, **latent_stem))
        # zero-init velocity head: training starts predicting v = 0
        nn.init.zeros_(self.llm2vae.weight)
        nn.init.zeros_(self.llm2vae.bias)
        self.time_embedder = TimestepEmbedder(d, scale=timestep_scale)
        if und_encoder is not None:
            self.und_encoder = ENCODERS.build(und_encoder)
            self.connector = MLPConnector(self.und_encoder.feature_dim, d)
        else:
            self.und_encoder = self.connector = None
        self.metaquery = MetaQueryTokens(hidden_size=d, **(metaquery or {}))
        self.attention = ATTENTION.build(attention or dict(type='sdpa'))
        self._init_weights()
        if pretrained_llm is not None:
            # after _init_weights (which would overwrite the weights) and
            # before freezing and any FSDP wrapping
            from .external.pretrained import load_pretrained_llm
            report = load_pretrained_llm(self, **pretrained_llm)
            MMLogger.get_current_instance().info(str(report))
        self.apply_freeze(freeze or {})

    # ------------------------------------------------------------------
    def _init_weights(self, std: float = 0.02) -> None:
        for name, module in self.named_modules():
            if name.startswith(('und_encoder', 'latent_encoder',
                                'latent_stem')):
                continue  # encoders and the stem initialise themselves
            if isinstance(module, nn.Linear) and module is not self.llm2vae:
                nn.init.normal_(module.weight, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=std)

    def freeze_groups(self) -> dict:
        """Map each name of :data:`FREEZABLE` to its parameters."""
        layers = self.decoder.layers
        groups = dict(
            und=[p for layer in layers
                 for p in layer.experts['und'].parameters()] +
            list(self.decoder.norm['und'].parameters()),
            gen=[p for layer in layers
                 for p in layer.experts['gen'].parameters()] +
            list(self.decoder.norm['gen'].parameters()),
            embed_tokens=list(self.embed_tokens.parameters()),
            lm_head=list(self.lm_head.parameters()),
            latent_io=list(self.vae2llm.parameters()) +
            list(self.llm2vae.parameters()) + _params(self.latent_stem),
            time_embedder=list(self.time_embedder.parameters()),
            metaquery=list(self.metaquery.parameters()),
            und_encoder=_params(self.und_encoder),
            connector=_params(self.connector),
            latent_encoder=list(self.latent_encoder.parameters()))
        return groups

    def apply_freeze(self, freeze: dict) -> None:
        """Set ``requires_grad=False`` on the named parts.

        The latent and understanding encoders are frozen unless ``freeze``
        says otherwise.
        """
        freeze = dict(dict(latent_encoder=True, und_encoder=True), **freeze)
        groups = self.freeze_groups()
        check_keys(freeze, groups, 'part', prefix='model.freeze.')
        for part, frozen in freeze.items():
            for p in groups[part]:
                p.requires_grad_(not frozen)

    def fsdp_wrap_modules(self) -> list:
        """The sub-modules FSDP shards as units of their own.

        Every decoder layer (both experts: und frozen and gen trainable
        live in one unit, which FSDP2 allows), the blocks of the
        understanding encoder (an encoder's own ``fsdp_wrap_modules``,
        else its first ``blocks``/``layers`` list), the connector, and
        ``lm_head`` unless it is tied to the embeddings. The rest
        (embeddings, latent I/O, time embedder, metaqueries, final
        norms, the latent encoder) is read outside those modules'
        ``forward`` and stays in the root unit.

        Returns:
            list[nn.Module]: Units in forward order, innermost first.
        """
        units = []
        encoder = self.und_encoder
        if encoder is not None:
            own = getattr(encoder, 'fsdp_wrap_modules', None)
            if callable(own):
                units.extend(own())
            else:
                for name, module in encoder.named_modules():
                    if name.endswith(('blocks', 'layers')) and isinstance(
                            module, (nn.ModuleList, nn.Sequential)):
                        units.extend(module)
                        break
        if self.connector is not None:
            units.append(self.connector)
        units.extend(self.decoder.layers)
        if self.lm_head.weight is not self.embed_tokens.weight:
            units.append(self.lm_head)
        return units

    # ------------------------------------------------------------------
    @torch.no_grad()
    def encode_latents(self, images: Tensor) -> Tensor:
        """Clean latent tokens of ``images`` ``(I, 3, H, W)`` -> ``(I, N, C)``.
        """
        return self.latent_encoder.encode(images)

    def encode_understanding(self, images: Tensor) -> Tensor:
        """Understanding-encoder features ``(I, N, C_vit)`` of ``images``.

        Gradients flow only if the encoder is trainable.
        """
        if self.und_encoder is None:
            raise RuntimeError('this model has no und_encoder; set '
                               'model.und_encoder in the config')
        trainable = any(p.requires_grad for p in self.und_encoder.parameters())
        with torch.set_grad_enabled(trainable and torch.is_grad_enabled()):
            return self.und_encoder(images)

    def latent_inputs(self, latents: Tensor, timesteps: Tensor,
                      pos: Tensor, group: Tensor) -> Tensor:
        """Embed latent tokens: ``vae2llm(x) [+ stem(x)] + time(t) +
        pos2d``.

        Args:
            latents (Tensor): ``(N, C)`` latent tokens.
            timesteps (Tensor): ``(N,)`` per-token ``t`` in ``[0, 1]``.
            pos (Tensor): ``(N, 2)`` rows and columns.
            group (Tensor): ``(N,)`` image of each token (the stem
                convolves each image's grid).

        Returns:
            Tensor: ``(N, D)``.
        """
        latents = latents.to(self.vae2llm.weight.dtype)
        x = self.vae2llm(latents)
        if self.latent_stem is not None:
            x = x + self.latent_stem(latents, group, pos)
        x = x + self.time_embedder(timesteps)
        return x + sincos_2d(pos, x.shape[-1]).to(x.dtype)

    def embed(self, batch: PackedBatch,
              noisy: Optional[NoisyLatents] = None) -> Tensor:
        """Input embeddings ``(L, D)`` of every token of ``batch``."""
        return self._embed(batch, noisy)[0]

    def _embed(self, batch: PackedBatch, noisy: Optional[NoisyLatents]):
        """Input embeddings ``(L, D)`` and the ViT tokens' encoder features
        ``(N_vit, C_vit)`` (None without ViT tokens)."""
        feats = None
        length, d = batch.num_tokens, self.cfg.hidden_size
        w = self.embed_tokens.weight
        x = w.new_zeros(length, d)
        text = self.embed_tokens(batch.input_ids[batch.text_index])
        x = put_rows(x, batch.text_index, text)
        if batch.noisy_index.numel():
            if noisy is None:
                raise ValueError(
                    'the batch has noisy latent segments but no noisy '
                    'latents were given: pass the NoisyLatents that the '
                    'objectives prepared (ObjectiveSet.prepare)')
            t = noisy.token_timesteps(batch.noisy_group)  # (N,)
            z = self.latent_inputs(noisy.latents, t, batch.noisy_pos,
                                   batch.noisy_group)
            x = put_rows(x, batch.noisy_index, z)
        if batch.clean_index.numel():
            clean = self.encode_latents(batch.images[batch.clean_images])
            clean = clean.flatten(0, 1)  # (N_clean, C)
            zeros = clean.new_zeros(clean.shape[0])
            z = self.latent_inputs(clean, zeros, batch.clean_pos,
                                   batch.clean_group)
            x = put_rows(x, batch.clean_index, z)
        if batch.vit_index.numel():
            feats = self.encode_understanding(
                batch.images[batch.vit_images]).flatten(0, 1)  # (N_vit, C)
            z = self.connector(feats.to(w.dtype))
            z = z + sincos_2d(batch.vit_pos, d).to(z.dtype)
            x = put_rows(x, batch.vit_index, z)
        if batch.query_index.numel():
            if not self.metaquery.enabled:
                raise RuntimeError('the batch has metaquery segments but '
                                   'model.metaquery.num_queries is 0')
            q = self.metaquery(batch.query_slot)  # (N_q, D)
            x = put_rows(x, batch.query_index, q)
        return x, feats

    def forward(self,
                batch: PackedBatch,
                noisy: Optional[NoisyLatents] = None,
                return_layers: Sequence[int] = ()) -> ModelOutputs:
        """Run the model on a packed batch.

        Args:
            batch (PackedBatch): Packed inputs.
            noisy (NoisyLatents, optional): The noisy latents
                ``(N_noisy, C)`` and timesteps ``(I_noisy,)`` of the
                batch's noisy segments (required when it has any).
            return_layers (Sequence[int]): 1-based layers whose outputs
                to return in ``ModelOutputs.layers``.

        Returns:
            ModelOutputs: Hidden states and head outputs.
        """
        x, vit_features = self._embed(batch, noisy)  # (L, D), (N_vit, C)
        mask = self.attention.prepare(batch)
        routes = make_routes(batch.und_index, batch.gen_index)
        hidden, taps = self.decoder(x, batch.position_ids, routes,
                                    self.attention, mask, return_layers)
        out = ModelOutputs(hidden=hidden, layers=taps,
                           vit_features=vit_features)
        if batch.noisy_index.numel():
            out.velocity = self.llm2vae(hidden[batch.noisy_index])
        if batch.ce_index.numel():
            out.ce_logits = self.lm_head(hidden[batch.ce_index])
        if batch.mq_index.numel():
            out.mq_hidden = hidden[batch.mq_index]
        return out


def _params(module: Optional[nn.Module]) -> list:
    return [] if module is None else list(module.parameters())
