"""Near-duplicate index: the same answers as comparing every pair, without comparing them."""

import random
import time

from app.ml import near_duplicates
from app.ml.near_duplicates import DISTANCE, HashIndex, groups


def flipped(value: int, bits: int, rng: random.Random) -> int:
    for bit in rng.sample(range(64), bits):
        value ^= 1 << bit
    return value


def planted_hashes(count: int, *, seed: int) -> list[int]:
    """Random hashes and copies of them a few bits away (some just past DISTANCE, some
    exact, some chained copy of a copy), shuffled."""
    rng = random.Random(seed)
    hashes: list[int] = []
    while len(hashes) < count:
        value = rng.getrandbits(64)
        hashes.append(value)
        for _ in range(rng.choice([0, 0, 1, 2, 4])):
            value = flipped(value if rng.random() < 0.5 else hashes[-1],
                            rng.choice([0, 1, 3, DISTANCE, DISTANCE + 1, DISTANCE + 3]), rng)
            hashes.append(value)
    rng.shuffle(hashes)
    return hashes[:count]


def brute_force_groups(hashes: list[int | None], joined=()) -> list[int]:
    """Every pair compared; each item labelled with the first item of its component."""
    label = list(range(len(hashes)))

    def relabel(old: int, new: int) -> None:
        for k, value in enumerate(label):
            if value == old:
                label[k] = new

    for i, key in enumerate(joined):
        for j in range(i):
            if key is not None and joined[j] == key and label[i] != label[j]:
                relabel(max(label[i], label[j]), min(label[i], label[j]))
    for i, a in enumerate(hashes):
        for j in range(i):
            b = hashes[j]
            if a is not None and b is not None and (a ^ b).bit_count() <= DISTANCE \
                    and label[i] != label[j]:
                relabel(max(label[i], label[j]), min(label[i], label[j]))
    return label


def test_chunks_cover_the_64_bits_once():
    masks = [mask << shift for shift, mask in near_duplicates.chunks()]
    assert len(masks) == DISTANCE + 1
    assert sum(masks) == (1 << 64) - 1
    assert all(a & b == 0 for i, a in enumerate(masks) for b in masks[:i])


def test_parse_reads_hex_and_skips_missing_hashes():
    assert near_duplicates.parse("00000000000000ff") == 255
    assert near_duplicates.parse("") is None


def test_near_finds_what_comparing_every_hash_finds():
    hashes = planted_hashes(1500, seed=1)
    index = HashIndex()
    for value in hashes:
        expected = [p for p, h in enumerate(hashes[:len(index)])
                    if (h ^ value).bit_count() <= DISTANCE]
        assert index.near(value) == expected
        index.add(value)
    assert sum(len(index.near(h)) > 1 for h in hashes) > 300  # the planted copies were found


def test_groups_are_the_connected_components():
    hashes = planted_hashes(1500, seed=2)
    expected = brute_force_groups(hashes)
    assert groups(hashes) == expected
    assert len(set(expected)) < len(hashes) - 300


def test_groups_join_recorded_keys_and_skip_missing_hashes():
    rng = random.Random(3)
    hashes = planted_hashes(400, seed=3)
    hashes = [None if rng.random() < 0.1 else h for h in hashes]
    joined = [rng.choice(["a", "b", None, None, None, None]) for _ in hashes]
    assert groups(hashes, joined=joined) == brute_force_groups(hashes, joined)


def test_exact_copies_and_empty_input():
    assert groups([]) == []
    assert groups([None, None]) == [0, 1]
    assert groups([7, 7, 7 ^ 0b11111, 7 ^ 0b111111, 9]) == [0, 0, 0, 0, 0]
    assert groups([0, (1 << 6) - 1]) == [0, 1]  # six bits apart


def test_groups_100000_hashes_in_seconds():
    hashes = planted_hashes(100_000, seed=4)
    tick = time.perf_counter()
    firsts = groups(hashes)
    elapsed = time.perf_counter() - tick
    print(f"grouped {len(hashes)} hashes into {len(set(firsts))} groups in {elapsed:.2f} s")
    assert len(set(firsts)) < len(hashes) - 10_000
    assert elapsed < 30  # all pairs would be 5e9 comparisons
