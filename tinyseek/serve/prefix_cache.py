"""Context caching: a prefix cache over fixed-size token blocks holding the attention cache rows.

DeepSeek's API bills input that hits its context cache at a fraction of the price, because a repeated
prefix (the same system prompt, a conversation's history) need not be recomputed. With MLA the cached
state per token is small (the normalised latent plus the shared RoPE key, `latent_cache_dim` values a
layer), so keeping many prefixes in memory is cheap; that is the point of MLA.

Layout. A prompt is cut into blocks of `block_size` tokens. Block i is keyed by a hash chain
`h_i = blake2b(h_{i-1} || tokens of block i)`, so a key names the whole prefix up to and including the
block, and two prompts share cached blocks exactly as far as their tokens agree. Each entry holds, for
every cache tensor the engine exposes, the rows of that block: a list of tensors `[block_size, ...]`
(token dimension first). Entries also keep their tokens, so a hash collision can never serve wrong rows.

Lookup walks the chain from the first block and stops at the first miss; at least one prompt token is
always left uncached, because the engine must run the last prompt token to get the first logits.
Eviction is least-recently-used under a budget in bytes (the tensors' storage). A hit touches the
chain leaf-first, so the root of a shared prefix is the most recently used and leaves go first: a
prefix is never left reachable with a hole in the middle for long.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import torch


@dataclass
class _Block:
    tokens: tuple[int, ...]
    tensors: list[torch.Tensor]  # each [block_size, ...]
    nbytes: int


@dataclass
class CachedPrefix:
    """What a lookup found: the longest cached block prefix of a prompt and its rows."""

    n_tokens: int  # cached prompt tokens (a multiple of block_size)
    tensors: list[torch.Tensor] = field(default_factory=list)  # each [n_tokens, ...], concatenated blocks


def _chain(prev: bytes, tokens: tuple[int, ...]) -> bytes:
    h = hashlib.blake2b(prev, digest_size=16)
    h.update(",".join(map(str, tokens)).encode("ascii"))
    return h.digest()


class BlockCache:
    """LRU block cache of prompt attention rows, bounded by `budget_bytes`. Thread-safe."""

    def __init__(self, block_size: int = 16, budget_bytes: int = 256 << 20):
        if block_size < 1:
            raise ValueError("block_size must be >= 1")
        self.block_size = block_size
        self.budget_bytes = budget_bytes
        self._blocks: OrderedDict[bytes, _Block] = OrderedDict()
        self.nbytes = 0
        self.hits = 0  # tokens served from the cache, over the cache's life
        self.evictions = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._blocks)

    def _keys(self, ids: list[int], n_blocks: int) -> list[tuple[bytes, tuple[int, ...]]]:
        out, prev, bs = [], b"", self.block_size
        for i in range(n_blocks):
            toks = tuple(ids[i * bs : (i + 1) * bs])
            prev = _chain(prev, toks)
            out.append((prev, toks))
        return out

    def lookup(self, ids: list[int]) -> CachedPrefix:
        """The longest cached block prefix of `ids`, leaving at least the last token uncached."""
        max_blocks = max(len(ids) - 1, 0) // self.block_size
        with self._lock:
            found: list[_Block] = []
            keys = []
            for key, toks in self._keys(ids, max_blocks):
                blk = self._blocks.get(key)
                if blk is None or blk.tokens != toks:
                    break
                found.append(blk)
                keys.append(key)
            for key in reversed(keys):  # leaf first, root last: the root ends most recently used
                self._blocks.move_to_end(key)
            n = len(found) * self.block_size
            self.hits += n
        if not found:
            return CachedPrefix(0, [])
        tensors = [torch.cat([b.tensors[j] for b in found], dim=0) for j in range(len(found[0].tensors))]
        return CachedPrefix(n, tensors)

    def insert(self, ids: list[int], tensors: list[torch.Tensor]) -> int:
        """Cache every full block of `ids` whose rows are in `tensors` (each [>= covered tokens, ...]).

        Returns the number of newly stored blocks. Blocks already present are only touched.
        """
        n_rows = min(t.shape[0] for t in tensors) if tensors else 0
        n_blocks = min(len(ids), n_rows) // self.block_size
        if n_blocks == 0:
            return 0
        bs, new = self.block_size, 0
        with self._lock:
            keys = self._keys(ids, n_blocks)
            for i, (key, toks) in enumerate(keys):
                if key in self._blocks:
                    continue
                rows = [t[i * bs : (i + 1) * bs].detach().clone() for t in tensors]
                nbytes = sum(r.numel() * r.element_size() for r in rows)
                if nbytes > self.budget_bytes:
                    break
                self._blocks[key] = _Block(toks, rows, nbytes)
                self.nbytes += nbytes
                new += 1
            for key, _ in reversed(keys):
                if key in self._blocks:
                    self._blocks.move_to_end(key)
            while self.nbytes > self.budget_bytes and self._blocks:
                _, blk = self._blocks.popitem(last=False)
                self.nbytes -= blk.nbytes
                self.evictions += 1
        return new

    def clear(self) -> None:
        with self._lock:
            self._blocks.clear()
            self.nbytes = 0

    def stats(self) -> dict:
        return {
            "blocks": len(self._blocks),
            "bytes": self.nbytes,
            "budget_bytes": self.budget_bytes,
            "block_size": self.block_size,
            "hit_tokens": self.hits,
            "evictions": self.evictions,
        }
