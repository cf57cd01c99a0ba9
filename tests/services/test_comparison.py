"""Two versions compared on the images both held out, judged by the labels now."""

import pytest

from app.models import Image, ImagePrediction, ModelVersion
from app.services import catalog, comparison, curation, projects
from tests.services.test_curation import project  # noqa: F401  (the fixture)


def add_model(session, of, answers: dict[int, tuple[str, bool]]) -> ModelVersion:
    """A version of project `of` whose stored prediction for each image is (label, held out
    for validation)."""
    model = ModelVersion(project_id=of.id, backbone="efficientnet_lite0",
                         labels=["black", "grizzly"], storage_prefix="models/x",
                         metrics={"error_rate": 0.0, "valid_count": 1})
    session.add(model)
    session.flush()
    for image_id, (predicted, held_out) in answers.items():
        session.add(ImagePrediction(model_id=model.id, image_id=image_id, given_label="black",
                                    predicted_label=predicted, confidence=0.8, loss=0.2,
                                    probabilities={predicted: 0.8}, in_validation=held_out))
    session.flush()
    return model


@pytest.fixture
def ids(session, project):  # noqa: F811
    return {label: [i.id for i in catalog.list_images(session=session, project=project,
                                                      label=label)[0]]
            for label in ("black", "grizzly")}


def test_only_images_both_held_out_are_compared(session, project, ids):  # noqa: F811
    black, grizzly = ids["black"], ids["grizzly"]
    # v1 held out black[0..2] and grizzly[0]; v2 held out black[1..2], grizzly[0..1].
    first = add_model(session, project, {
        black[0]: ("black", True), black[1]: ("grizzly", True), black[2]: ("black", True),
        grizzly[0]: ("grizzly", True), grizzly[1]: ("grizzly", False)})
    second = add_model(session, project, {
        black[0]: ("black", False), black[1]: ("black", True), black[2]: ("black", True),
        grizzly[0]: ("black", True), grizzly[1]: ("grizzly", True)})
    result = comparison.compare_models(session=session, first=first, second=second)
    assert result.image_ids == sorted([black[1], black[2], grizzly[0]])
    assert result.only == (1, 1)  # black[0] for v1, grizzly[1] for v2: the other trained on it
    assert result.wrong == (1, 1) and result.error_rate == (1 / 3, 1 / 3)
    rows = {row.label: row for row in result.labels}
    assert (rows["black"].images, rows["black"].correct) == (2, (1, 2))
    assert (rows["grizzly"].images, rows["grizzly"].correct) == (1, (1, 0))
    assert result.disagreeing == 2
    assert {d.image_id: d.predicted for d in result.disagreements} == {
        black[1]: ("grizzly", "black"), grizzly[0]: ("grizzly", "black")}
    # Out of sample on every image both predicted (held out, or by fold heads): all five.
    assert result.cross_count == 5 and result.cross_wrong == (1, 1)


def test_labels_now_are_the_truth_and_excluded_images_are_left_out(session, project, ids):  # noqa: F811
    black, grizzly = ids["black"], ids["grizzly"]
    answers = {black[0]: ("grizzly", True), black[1]: ("black", True), grizzly[2]: ("black", True)}
    first = add_model(session, project, answers)
    second = add_model(session, project, answers)
    curation.bulk_update(session=session, project=project, image_ids=[black[0]], label="grizzly")
    session.get(Image, grizzly[2]).status = "excluded"
    projects.add_label(session=session, project=project, name="panda")
    session.flush()
    result = comparison.compare_models(session=session, first=first, second=second)
    assert result.image_ids == sorted([black[0], black[1]]) and result.changed == 1
    assert result.wrong == (0, 0)  # black[0] is a grizzly now: both were right about it


def test_versions_that_share_no_held_out_image_compare_nothing(session, project, ids):  # noqa: F811
    black = ids["black"]
    first = add_model(session, project, {black[0]: ("black", True), black[1]: ("black", False)})
    second = add_model(session, project, {black[0]: ("black", False), black[1]: ("black", True)})
    result = comparison.compare_models(session=session, first=first, second=second)
    assert result.count == 0 and result.error_rate == (None, None) and result.only == (1, 1)
    assert result.cross_count == 2 and result.cross_error_rate == (0.0, 0.0)
