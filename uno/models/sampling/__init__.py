"""Inference: flow-matching image sampling and captioning with KV caches.

Each sampler lays its sequences out with the same plans as training
(:mod:`uno.structures.plans`) and drives a :class:`UnoModel` through its
public parts (embeddings, decoder, attention backend, heads), keeping the
decoder's :class:`KVCache` of the condition between steps.
"""
from uno.models.mot.decoder import KVCache
from .captioner import Captioner
from .flow_sampler import FlowSampler

__all__ = ['FlowSampler', 'Captioner', 'KVCache']
