import torch

from app.ml import device as device_module
from app.ml.device import autocast_dtype

CPU = torch.device("cpu")


def _cpu(monkeypatch, *, amx: bool, avx512_bf16: bool) -> None:
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16,
                        raising=False)


def test_training_on_avx512_bf16_without_amx_stays_fp32(monkeypatch):
    """bf16's backward is slower than fp32's there: inference autocasts, training does not."""
    _cpu(monkeypatch, amx=False, avx512_bf16=True)
    assert autocast_dtype(CPU) == torch.bfloat16
    assert autocast_dtype(CPU, training=True) is None
    with device_module.autocast(CPU, training=True):
        assert not torch.is_autocast_enabled("cpu")


def test_training_with_amx_autocasts_to_bf16(monkeypatch):
    _cpu(monkeypatch, amx=True, avx512_bf16=True)
    assert autocast_dtype(CPU, training=True) == torch.bfloat16
    with device_module.autocast(CPU, training=True):
        assert torch.is_autocast_enabled("cpu")


def test_cpu_without_bf16_is_fp32_everywhere(monkeypatch):
    _cpu(monkeypatch, amx=False, avx512_bf16=False)
    assert autocast_dtype(CPU) is None
    assert autocast_dtype(CPU, training=True) is None
