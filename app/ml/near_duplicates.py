"""Near-duplicate images: 64-bit dHashes within a few bits of each other, without a scan of all
pairs (numpy and plain Python).

Multi-index hashing: a hash is cut into `distance + 1` chunks; two hashes at most `distance`
bits apart agree exactly on at least one chunk (pigeonhole), so only hashes that share a
chunk with each other are compared. Upload time adds hashes one by one (`HashIndex`); the
training split groups a whole dataset at once (`groups`). Both draw the same graph, an edge
between hashes at most `distance` bits apart, and a group is a connected component of it.
"""

from collections.abc import Hashable, Sequence

import numpy as np

DISTANCE = 5  # bits; a resized or recompressed copy of a photo stays within it
BITS = 64


def parse(phash: str) -> int | None:
    """A dHash's 16 hex characters as an int; None for an image without one ("")."""
    return int(phash, 16) if phash else None


def chunks(distance: int = DISTANCE) -> list[tuple[int, int]]:
    """(shift, mask) of each of the `distance + 1` chunks that together cover the 64 bits."""
    count = distance + 1
    sizes = [BITS // count + (i < BITS % count) for i in range(count)]
    shifts = [sum(sizes[i + 1:]) for i in range(count)]
    return [(shift, (1 << size) - 1) for shift, size in zip(shifts, sizes, strict=True)]


class HashIndex:
    """Hashes added one by one, each found again from any hash within `distance` bits."""

    def __init__(self, distance: int = DISTANCE) -> None:
        self.distance = distance
        self._chunks = chunks(distance)
        self._tables: list[dict[int, list[int]]] = [{} for _ in self._chunks]
        self._hashes: list[int] = []

    def __len__(self) -> int:
        return len(self._hashes)

    def add(self, value: int) -> int:
        """Index `value`; its position (0, 1, 2 ... in the order added)."""
        position = len(self._hashes)
        self._hashes.append(value)
        for table, (shift, mask) in zip(self._tables, self._chunks, strict=True):
            table.setdefault((value >> shift) & mask, []).append(position)
        return position

    def near(self, value: int) -> list[int]:
        """Positions of the added hashes at most `distance` bits from `value`, in order added."""
        candidates: set[int] = set()
        for table, (shift, mask) in zip(self._tables, self._chunks, strict=True):
            candidates.update(table.get((value >> shift) & mask, ()))
        return sorted(p for p in candidates
                      if (self._hashes[p] ^ value).bit_count() <= self.distance)


def groups(
    hashes: Sequence[int | None],
    *,
    distance: int = DISTANCE,
    joined: Sequence[Hashable | None] = (),
) -> list[int]:
    """For each item, the position of the first item of its group.

    Items are grouped when their hashes are at most `distance` bits apart, directly or
    through other items, and when they share a `joined` key (a group recorded earlier).
    An item without a hash (None) is grouped by its key only.
    """
    parent = list(range(len(hashes)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i: int, j: int) -> None:
        i, j = root(i), root(j)
        parent[max(i, j)] = min(i, j)  # a group's root stays its first item

    first_of: dict[Hashable, int] = {}
    for i, key in enumerate(joined):
        if key is not None:
            union(i, first_of.setdefault(key, i))
    for i, j in near_pairs(hashes, distance=distance):
        union(i, j)
    return [root(i) for i in range(len(hashes))]


def near_pairs(hashes: Sequence[int | None], *, distance: int = DISTANCE) -> list[tuple[int, int]]:
    """Pairs of positions (i < j) whose hashes are at most `distance` bits apart; enough of
    them to connect each group (an exact copy is paired with the first of its value only)."""
    positions = np.array([i for i, h in enumerate(hashes) if h is not None], dtype=np.int64)
    if positions.size == 0:
        return []
    values = np.array([hashes[i] for i in positions], dtype=np.uint64)
    distinct, first, inverse = np.unique(values, return_index=True, return_inverse=True)
    representative = positions[first]  # the first position holding each distinct value
    copies = representative[inverse] != positions
    left = [representative[inverse][copies]]
    right = [positions[copies]]
    for shift, mask in chunks(distance):
        a, b = _sharing_chunk(distinct, shift=shift, mask=mask)
        close = _bit_counts(distinct[a] ^ distinct[b]) <= distance
        left.append(representative[a[close]])
        right.append(representative[b[close]])
    i, j = np.concatenate(left), np.concatenate(right)
    i, j = np.minimum(i, j), np.maximum(i, j)
    pairs = np.unique(np.stack([i, j], axis=1), axis=0)
    return [(int(x), int(y)) for x, y in pairs]


def _sharing_chunk(values: np.ndarray, *, shift: int, mask: int) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs of the values whose chunk (shift, mask) is equal: each run of equal chunks
    in sorted order, compared at offsets 1, 2 ... while a run is longer than the offset."""
    keys = (values >> np.uint64(shift)) & np.uint64(mask)
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    run_end = np.repeat(np.r_[starts[1:], keys.size], np.diff(np.r_[starts, keys.size]))
    live = np.arange(keys.size)
    left, right = [], []
    offset = 1
    while True:
        live = live[live + offset < run_end[live]]
        if live.size == 0:
            break
        left.append(order[live])
        right.append(order[live + offset])
        offset += 1
    if not left:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(left), np.concatenate(right)


def _bit_counts(x: np.ndarray) -> np.ndarray:
    """Set bits of each uint64 (SWAR popcount; numpy 1.26 has no bitwise_count)."""
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return (x * np.uint64(0x0101010101010101)) >> np.uint64(56)
