import numpy as np

from app.ml.lr_find import valley


def test_valley_picks_a_rate_on_the_falling_slope():
    lrs = [10 ** (-6 + 6 * i / 99) for i in range(100)]
    losses = [1.1 - 0.8 / (1 + np.exp(-(i - 50) / 6)) if i < 85 else 0.3 + (i - 85) * 0.2
              for i in range(100)]
    suggestion = valley(lrs, losses)
    assert lrs[40] <= suggestion <= lrs[70]


def test_valley_of_a_curve_too_short_to_fall():
    assert valley([1e-4], [0.5]) == 1e-4
    assert valley([], []) == 1e-3
