"""Where training runs: the device, its threads and seeds, moving batches there, and mixed
precision where the hardware makes it fast."""

import os
import random
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import numpy as np
import torch


def pick_device(name: str | None) -> torch.device:
    """The named device, else CUDA when there is one, else the CPU."""
    return torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))


def owned_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, e.g. a container's cpuset)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - third-party code may draw from the legacy global
    torch.manual_seed(seed)


def to_device(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Channels-last on the device; through pinned memory, without blocking, on a GPU."""
    if device.type == "cuda":
        return batch.pin_memory().to(device, non_blocking=True, memory_format=torch.channels_last)
    return batch.to(device, memory_format=torch.channels_last)


def autocast_dtype(device: torch.device, *, training: bool = False) -> torch.dtype | None:
    """The mixed precision that is fast here, or None for fp32. On a CPU, inference takes
    bf16 with AVX512-BF16 or AMX; training only with AMX: without its tiles, bf16's backward
    kernels are slower than fp32's (one unfrozen step of 32 on an AVX512-BF16 EPYC: 2.36 s
    in bf16, 1.91 s in fp32, bench/unfrozen_ab.py)."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and (cpu_has_amx() if training else cpu_has_fast_bf16()):
        return torch.bfloat16
    return None


def autocast(device: torch.device, *, enabled: bool = True, training: bool = False):
    dtype = autocast_dtype(device, training=training)
    if not enabled or dtype is None:
        return nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def cpu_has_fast_bf16() -> bool:
    return cpu_has_amx() or getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()


def cpu_has_amx() -> bool:
    return getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()


@contextmanager
def single_thread(device: torch.device) -> Iterator[None]:
    """Tiny CPU operations (a linear head's steps) on one thread: a second one only adds
    synchronisation, and on a busy machine OpenMP's waiting threads starve each other
    (the bears' 5 fold heads: 130 s on 2 threads, 4.8 s on 1, at load average 9)."""
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
