"""Two model versions of a project compared on the same images.

Each version's own error rate was measured on its own validation split, and two trainings
on a changed dataset split it differently: those figures are not comparable. The images both
versions held out for validation (neither trained on them) are; each version's prediction for
them is stored (ImagePrediction, in_validation), so the comparison reads them, with no model
loaded, and judges both against the images' labels now (a relabel since either training
counts for both).

Those images are fewer when the dataset changed between the trainings: a label whose photos
changed is shuffled anew (470 photos in 3 labels, 93 validating: one photo excluded leaves
76 shared, two relabels 53). So the comparison also gives each version's out-of-sample error
on every image both predicted: a version's validation images by the final model, its
training images by the fold heads trained without them. That is a cross-validation of each
training (recipe and data), not of the final weights alone, and is labelled so.
"""

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import Image, ImagePrediction, Label, ModelVersion

DISAGREEMENTS = 24  # shown at most


@dataclass
class LabelRow:
    label: str
    images: int
    correct: tuple[int, int]

    @property
    def recall(self) -> tuple[float | None, float | None]:
        return tuple(c / self.images if self.images else None for c in self.correct)


@dataclass
class Disagreement:
    image_id: int
    label: str
    predicted: tuple[str, str]
    confidence: tuple[float, float]


@dataclass
class Comparison:
    image_ids: list[int] = field(default_factory=list)  # the images compared, by id
    wrong: tuple[int, int] = (0, 0)
    labels: list[LabelRow] = field(default_factory=list)
    disagreements: list[Disagreement] = field(default_factory=list)
    disagreeing: int = 0
    only: tuple[int, int] = (0, 0)  # validation images the other version trained on
    changed: int = 0  # held out by both, left out: excluded, unlabelled, or a label one lacks
    cross_count: int = 0  # images both predicted out of sample (held out or by fold heads)
    cross_wrong: tuple[int, int] = (0, 0)

    @property
    def count(self) -> int:
        return len(self.image_ids)

    @property
    def error_rate(self) -> tuple[float | None, float | None]:
        return tuple(w / self.count if self.count else None for w in self.wrong)

    @property
    def cross_error_rate(self) -> tuple[float | None, float | None]:
        return tuple(w / self.cross_count if self.cross_count else None
                     for w in self.cross_wrong)


def _predictions(session: Session, model: ModelVersion) -> dict[int, ImagePrediction]:
    rows = session.scalars(select(ImagePrediction).where(ImagePrediction.model_id == model.id))
    return {row.image_id: row for row in rows}


def _labels_now(session: Session, image_ids: list[int], known: set[str]) -> dict[int, str]:
    """The label of each active, labelled image whose label both versions know."""
    found = {}
    for start in range(0, len(image_ids), 500):
        found |= dict(session.execute(
            select(Image.id, Label.name).join(Label, Label.id == Image.label_id)
            .where(Image.id.in_(image_ids[start:start + 500]), Image.status == "active")).all())
    return {i: label for i, label in found.items() if label in known}


def compare_models(*, session: Session, first: ModelVersion, second: ModelVersion
                   ) -> Comparison:
    """Both versions' stored predictions for the images both held out, against the labels now
    (active, labelled images whose label both versions know)."""
    every = _predictions(session, first), _predictions(session, second)
    ours, theirs = ({i: p for i, p in side.items() if p.in_validation} for side in every)
    shared = sorted(set(ours) & set(theirs))
    both = sorted(set(every[0]) & set(every[1]))
    current = _labels_now(session, both, set(first.labels) & set(second.labels))
    compared = [i for i in shared if i in current]
    result = Comparison(image_ids=compared, only=(len(ours) - len(shared),
                                                   len(theirs) - len(shared)),
                        changed=len(shared) - len(compared))
    crossed = [i for i in both if i in current]
    result.cross_count = len(crossed)
    result.cross_wrong = tuple(sum(side[i].predicted_label != current[i] for i in crossed)
                               for side in every)
    wrong = [0, 0]
    per_label: dict[str, list[int]] = {label: [0, 0, 0] for label in first.labels
                                       if label in second.labels}
    for image_id in compared:
        truth, answers = current[image_id], (ours[image_id], theirs[image_id])
        per_label[truth][0] += 1
        for side, answer in enumerate(answers):
            if answer.predicted_label == truth:
                per_label[truth][side + 1] += 1
            else:
                wrong[side] += 1
        if answers[0].predicted_label != answers[1].predicted_label:
            result.disagreeing += 1
            if len(result.disagreements) < DISAGREEMENTS:
                result.disagreements.append(Disagreement(
                    image_id=image_id, label=truth,
                    predicted=(answers[0].predicted_label, answers[1].predicted_label),
                    confidence=(answers[0].confidence, answers[1].confidence)))
    result.wrong = (wrong[0], wrong[1])
    result.labels = [LabelRow(label=label, images=n, correct=(a, b))
                     for label, (n, a, b) in per_label.items()]
    return result
