"""One 0..1 progress fraction across a training's phases, and the cancellation check."""

from collections.abc import Callable

from app.ml.recipe import TrainingCancelled

ProgressCallback = Callable[[float, str, dict], None]


class Reporter:
    """Turns phase-local progress into one 0..1 fraction and checks for cancellation."""

    def __init__(self, progress: ProgressCallback | None,
                 should_stop: Callable[[], bool] | None):
        self.progress, self.should_stop = progress, should_stop
        self.weights: dict[str, float] = {}
        self.offsets: dict[str, float] = {}

    def plan(self, **phase_costs: float) -> None:
        """Each phase's share of the whole, by its estimated cost (decoding always first; 5%
        of the rest unless its cost is given)."""
        decode = phase_costs.pop("decode", None) or sum(phase_costs.values()) * 0.05 or 1.0
        costs = {"decode": decode, **phase_costs}
        total = sum(costs.values())
        offset = 0.0
        for phase, cost in costs.items():
            self.offsets[phase], self.weights[phase] = offset / total, cost / total
            offset += cost

    def __call__(self, phase: str, done: float, message: str, **extra) -> None:
        """done of phase (0..1) so far; raises TrainingCancelled when asked to stop."""
        if self.should_stop and self.should_stop():
            raise TrainingCancelled(f"cancelled during {phase}")
        if self.progress:
            fraction = self.offsets.get(phase, 0.0) + self.weights.get(phase, 0.0) * done
            self.progress(min(fraction, 1.0), message, {"phase": phase, **extra})

    def done(self) -> None:
        if self.progress:
            self.progress(1.0, "training finished", {"phase": "done"})
