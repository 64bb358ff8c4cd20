"""The target's KV cache, owned by the engine: preallocated buffers per layer, written in place.

Hugging Face's ``DynamicCache`` concatenates the whole cache on every forward (a copy of every layer's
keys and values per round) and knows no "keep these tree nodes".  Here each layer holds one buffer of
``capacity`` positions; a forward writes its new keys/values into the next free slots and attends over a
view of the filled prefix (no copy); a rollback is a length change; keeping the accepted tree path
moves just those few positions down, in place.  The buffers grow by doubling when a sequence outgrows
them (never within a generation whose length was given up front).

It plugs into transformers through its supported cache interface (``Cache`` of ``CacheLayerMixin``
layers, passed as the model's cache argument), so no deprecated argument is used.
"""

from __future__ import annotations

import itertools

import torch
from transformers.cache_utils import Cache, CacheLayerMixin


class EngineKVLayer(CacheLayerMixin):
    """One attention layer: keys/values [1, heads, capacity, head_dim], ``length`` of them filled."""

    is_sliding = False
    is_croppable = True

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = max(int(capacity), 1)
        self.length = 0
        self._k: torch.Tensor | None = None  # the whole buffer; ``keys`` is the filled view
        self._v: torch.Tensor | None = None

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        b, h, _, dk = key_states.shape
        self.device = key_states.device
        self._k = key_states.new_empty((b, h, self.capacity, dk))
        self._v = value_states.new_empty((b, h, self.capacity, value_states.shape[-1]))
        self.is_initialized = True

    def _grow(self, need: int) -> None:
        cap = self.capacity
        while cap < need:
            cap *= 2
        k, v = self._k, self._v
        self._k = k.new_empty((*k.shape[:2], cap, k.shape[-1]))
        self._v = v.new_empty((*v.shape[:2], cap, v.shape[-1]))
        self._k[:, :, : self.length] = k[:, :, : self.length]
        self._v[:, :, : self.length] = v[:, :, : self.length]
        self.capacity = cap

    def _sync_views(self) -> None:
        self.keys = self._k[:, :, : self.length]
        self.values = self._v[:, :, : self.length]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        t = key_states.shape[-2]  # key_states: [1, heads, t, head_dim]
        end = self.length + t
        if end > self.capacity:
            self._grow(end)
        self._k[:, :, self.length : end] = key_states
        self._v[:, :, self.length : end] = value_states
        self.length = end
        self._sync_views()
        return self.keys, self.values

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.length + query_length, 0

    def get_seq_length(self) -> int:
        return self.length

    def get_max_length(self) -> int:
        return -1  # grows when needed

    def crop(self, tokens_to_remove: int) -> None:
        """transformers' convention: a negative count of positions to drop from the end."""
        self.keep_first(self.length - abs(tokens_to_remove))

    def keep_first(self, length: int) -> None:
        self.length = max(0, min(self.length, length))
        if self.is_initialized:
            self._sync_views()

    def keep_path(self, start: int, keep: torch.Tensor) -> None:
        """Keep positions [0, start) plus ``start + keep`` (ascending offsets), moved down in place."""
        if self.is_initialized and keep.numel():
            src = keep + start  # [n] positions to keep, each >= its destination
            # advanced indexing reads into a temporary first, so overlapping moves are safe
            self._k[:, :, start : start + keep.numel()] = self._k[:, :, src]
            self._v[:, :, start : start + keep.numel()] = self._v[:, :, src]
        self.keep_first(start + keep.numel())

    def reset(self) -> None:
        self.length = 0
        if self.is_initialized:
            self._sync_views()


class EngineKVCache(Cache):
    """The engine's cache of one sequence: an :class:`EngineKVLayer` per decoder layer."""

    def __init__(self, num_layers: int, capacity: int) -> None:
        super().__init__(layers=[EngineKVLayer(capacity) for _ in range(num_layers)])

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.layers[layer_idx].length

    def keep_first(self, length: int) -> None:
        """Roll back to the first ``length`` positions (no copy)."""
        for layer in self.layers:
            layer.keep_first(length)

    def keep_path(self, start: int, keep: list[int]) -> None:
        """Keep [0, start) and the accepted tree nodes ``start + k`` for k in ``keep`` (in that order)."""
        idx = torch.tensor(keep, dtype=torch.long)
        if keep and any(b <= a for a, b in itertools.pairwise(keep)):
            raise ValueError(f"keep offsets must ascend, got {keep}")
        for layer in self.layers:
            layer.keep_path(start, idx)
