"""The "none of these" score on synthetic embeddings: unit vectors that make a leak visible
(a photo and its near-duplicate share a direction of their own, which only they have)."""

import numpy as np

from app.ml.novelty import (
    Bank,
    bank_rows,
    calibrate,
    leave_fold_out_similarity,
    neighbours_for,
    similarity,
    unit_rows,
)
from app.ml.split import fold_assignment


def unit(rng: np.random.Generator, n: int, dims: int = 64) -> np.ndarray:
    return unit_rows(rng.random((n, dims)))


def test_similarity_is_with_the_kth_nearest_row():
    bank = np.eye(4, dtype=np.float32)
    query = unit_rows(np.array([[4.0, 3.0, 0.0, 0.0]]))  # 0.8 with row 0, 0.6 with row 1
    assert np.allclose(similarity(query, bank, neighbours=1), [0.8])
    assert np.allclose(similarity(query, bank, neighbours=2), [0.6])
    assert np.allclose(similarity(query, bank, neighbours=9), [0.0])  # capped at the bank
    assert similarity(query, bank[:0]).tolist() == [0.0]  # an empty bank knows nothing


def test_leave_fold_out_keeps_a_photo_from_matching_itself_and_its_duplicate():
    # 40 photos in 20 near-duplicate pairs; each pair has a direction nobody else has.
    pairs = 20
    group = np.repeat(np.arange(pairs), 2)
    bank = unit_rows(np.eye(pairs)[group] + 0.01 * np.random.default_rng(0).random((40, pairs)))
    in_sample = similarity(bank, bank, neighbours=2)  # itself, then its duplicate
    assert in_sample.min() > 0.99
    folds = np.array(fold_assignment([f"g{g}" for g in group], folds=5, seed=0))
    held_out = leave_fold_out_similarity(bank, folds, neighbours=2)
    assert held_out.max() < 0.1  # out of sample, nothing is like it
    by_photo = leave_fold_out_similarity(bank, np.arange(40) % 5, neighbours=1)
    assert by_photo.min() > 0.99  # folds that split a pair leak the duplicate


def test_leave_fold_out_scales_the_neighbour_to_the_smaller_bank():
    rng = np.random.default_rng(1)
    bank = unit(rng, 100)
    folds = np.arange(100) % 5
    expected = np.concatenate([similarity(bank[folds == f], bank[folds != f], neighbours=8)
                               for f in range(5)])
    got = np.concatenate([leave_fold_out_similarity(bank, folds, neighbours=10)[folds == f]
                          for f in range(5)])
    assert np.allclose(got, expected)  # the 10th of 100 ~ the 8th of the 80 left
    assert (leave_fold_out_similarity(bank, np.zeros(100, int)) == 1).all()  # one fold: keep


def test_calibration_rejects_at_most_the_share_allowed_and_never_rounds_up():
    rng = np.random.default_rng(2)
    known = rng.uniform(0.3, 1.0, 1000)
    calibrated = calibrate(known, reject_pct=0.03)
    threshold = calibrated["unknown_threshold"]
    assert (known < threshold).mean() <= 0.03 < (known <= np.sort(known)[31]).mean()
    assert calibrated["unknown_reject_rate"] == round(float((known < threshold).mean()), 5)
    assert threshold == round(threshold, 5) and threshold <= np.sort(known)[30]
    assert calibrate(np.array([]))["unknown_threshold"] == 0.0


def test_familiarity_is_the_share_of_the_reference_below():
    bank = Bank(embeddings=np.eye(2, dtype=np.float32), neighbours=1,
                reference=np.array([0.2, 0.4, 0.4, 0.8], dtype=np.float32))
    assert bank.familiarity(np.array([0.1, 0.2, 0.5, 0.9])).tolist() == [0, 0.25, 0.75, 1]
    # one of four may go: the threshold rejects what is less like the rest than the second
    calibrated = bank.calibration(reject_pct=0.25)
    assert calibrated == {"unknown_threshold": 0.75, "unknown_reject_rate": 0.25}
    assert bank.familiarity(np.array([0.39, 0.4])).tolist() == [0.25, 0.75]


def test_a_bank_rejects_strangers_and_few_new_photos_of_its_labels():
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((3, 64))
    labels = np.repeat(np.arange(3), 100)
    photos = unit_rows(np.abs(centres[labels] + 0.3 * rng.standard_normal((300, 64))))
    folds = np.array(fold_assignment([None] * 300, folds=5, seed=0))
    bank = Bank.build(photos, labels=labels, folds=folds)
    assert bank.neighbours == 20 and bank.embeddings.dtype == np.float32
    threshold = bank.calibration(reject_pct=0.03)["unknown_threshold"]
    assert (bank.familiarity(bank.reference) < threshold).mean() <= 0.03
    new = unit_rows(np.abs(centres[labels] + 0.3 * rng.standard_normal((300, 64))))
    strangers = unit_rows(np.abs(rng.standard_normal((50, 64))))  # like none of the three
    assert (bank.familiarity(bank.similarity(new)) < threshold).mean() <= 0.05
    assert (bank.familiarity(bank.similarity(strangers)) < threshold).all()


def test_the_neighbour_shrinks_with_the_smallest_label():
    assert neighbours_for(np.repeat([0, 1], [500, 300])) == 20
    assert neighbours_for(np.repeat([0, 1], [500, 16])) == 3
    assert neighbours_for(np.array([0, 1, 1])) == 1


def test_bank_rows_cap_the_bank_and_keep_every_label_in_proportion():
    labels = np.repeat([0, 1, 2], [9000, 3000, 5])
    rows = bank_rows(labels, max_rows=1200, seed=0)
    assert len(rows) <= 1201 and len(set(rows.tolist())) == len(rows)
    counts = np.bincount(labels[rows], minlength=3)
    assert abs(counts[0] - 3 * counts[1]) <= 3 and counts[2] >= 1
    assert (bank_rows(labels, max_rows=1200, seed=0) == rows).all()  # seeded
    assert (bank_rows(labels[:50], max_rows=1200) == np.arange(50)).all()  # small: all
