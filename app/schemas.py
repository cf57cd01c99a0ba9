"""Request bodies of the JSON API (validated by pydantic; errors become 422 with detail), and
answers whose fields the OpenAPI document explains."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from app.ml.recipe import FROZEN_EPOCHS, RECIPE_FIELDS, RecipeField
from app.services.accounts import MIN_PASSWORD_CHARS
from app.services.auth import MAX_PASSWORD_CHARS
from app.services.catalog import IMAGE_STATUSES
from app.services.curation import MAX_BULK
from app.services.deployments import FAMILIARITY, PROBABILITY, SLUG_PATTERN
from app.services.gathering import MAX_IMAGES, MAX_URLS
from app.services.prediction_log import MAX_ADD
from app.services.projects import MAX_NAME
from app.services.search import LICENCES

ImageStatus = Literal[IMAGE_STATUSES]  # type: ignore[valid-type]
Licence = Literal[tuple(LICENCES)]  # type: ignore[valid-type]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SessionIn(Strict):
    email: str = Field(min_length=3, max_length=320)
    password: str = Field(min_length=1, max_length=1000)


class UserIn(Strict):
    email: str = Field(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")
    password: str = Field(min_length=MIN_PASSWORD_CHARS, max_length=MAX_PASSWORD_CHARS)
    is_admin: bool = False


class UserPatch(Strict):
    disabled: bool | None = None


class PasswordChangeIn(Strict):
    current_password: str = Field(min_length=1, max_length=MAX_PASSWORD_CHARS)
    new_password: str = Field(min_length=MIN_PASSWORD_CHARS, max_length=MAX_PASSWORD_CHARS)


class ApiKeyIn(Strict):
    name: str = Field(default="", max_length=200)


class ProjectIn(Strict):
    name: str = Field(min_length=1, max_length=MAX_NAME)
    labels: list[str] = Field(default_factory=list, max_length=100)


class ProjectPatch(Strict):
    name: str = Field(min_length=1, max_length=MAX_NAME)


class LabelIn(Strict):
    name: str = Field(min_length=1, max_length=MAX_NAME)
    query: str | None = Field(default=None, max_length=500)


class LabelPatch(Strict):
    """Fields to change. Renaming keeps the label's images; models trained before keep the
    names they were trained with."""

    name: str | None = Field(default=None, min_length=1, max_length=MAX_NAME)
    query: str | None = Field(default=None, max_length=500, description="blank: the name")


REVIEWED = ("true: a person reviewed the image (the review queue leaves it out from then "
            "on); false: undo that")


class ImagePatch(Strict):
    label: str | None = None
    status: ImageStatus | None = None
    reviewed: bool | None = Field(default=None, description=REVIEWED)


class BulkIn(Strict):
    image_ids: list[int] = Field(min_length=1, max_length=MAX_BULK)
    label: str | None = Field(default=None, max_length=MAX_NAME)
    inbox: bool = Field(default=False, description="true: take the label off (the images go "
                        "back to the inbox); not with `label`")
    status: ImageStatus | None = None
    reviewed: bool | None = Field(default=None, description=REVIEWED)


class UploadDismissIn(Strict):
    upload_ids: list[int] = Field(min_length=1, max_length=MAX_BULK)


class SearchIn(Strict):
    label: str | None = Field(default=None, min_length=1, max_length=MAX_NAME,
                              description="omitted: the images go to the inbox (give `query`)")
    query: str | None = Field(default=None, max_length=500)
    max_images: int | None = Field(default=None, ge=1, le=MAX_IMAGES)
    provider: str | None = Field(default=None, max_length=50)
    licence: Licence | None = Field(
        default=None, description="only images published under this licence: "
        + "; ".join(f"{key}: {text}" for key, text in LICENCES.items())
        + " (omitted: any licence, unknown for each image)")


class UrlImportIn(Strict):
    label: str | None = Field(default=None, min_length=1, max_length=MAX_NAME,
                              description="omitted: the images go to the inbox")
    urls: list[str] = Field(min_length=1, max_length=MAX_URLS)


def _recipe_field(spec: RecipeField) -> tuple:
    """An optional request field with the recipe field's limits (omitted: the default)."""
    kind = Literal[spec.choices] if spec.choices else spec.type  # type: ignore[valid-type]
    default = "" if spec.default is None else f"; default {spec.default}"
    extra = {"deprecated": True} if spec is FROZEN_EPOCHS else None
    return kind | None, Field(default=None, description=spec.label + default,
                              json_schema_extra=extra, **spec.bounds)


TrainingIn = create_model(
    "TrainingIn", __base__=Strict,
    __doc__="A training recipe (app.ml.recipe); omitted fields take the recipe's defaults.",
    **{spec.name: _recipe_field(spec) for spec in (*RECIPE_FIELDS.values(), FROZEN_EPOCHS)},
)


class DeploymentIn(Strict):
    slug: str = Field(pattern=f"^{SLUG_PATTERN}$")
    public: bool = False
    threshold: float | None = Field(default=None, ge=0, le=1)
    log_images: bool = False


class DeploymentPatch(Strict):
    """Fields to change; `"threshold": null` goes back to the model's calibrated threshold."""

    model_id: int | None = None
    public: bool | None = None
    threshold: float | None = Field(default=None, ge=0, le=1)
    log_images: bool | None = None


class PredictJson(Strict):
    image_base64: str | None = Field(default=None, max_length=40_000_000)
    url: str | None = Field(default=None, max_length=4000)


class PredictionOut(BaseModel):
    """One photo's prediction. Read `answer`: it is null for "none of these"."""

    answer: str | None = Field(description=(
        "The label this photo is, or null when the model says “none of these” (its "
        "`unknown_score` is below `threshold`; `unknown_reason` says why). A label may be "
        "called “unknown”, so test for null, never for a string."))
    label: str = Field(description=(
        "The most probable label, always set: when `unknown` is true it is only the closest "
        "guess, not an answer (kept for v1 clients; new code reads `answer`)."))
    confidence: float = Field(ge=0, le=1, description="The probability of `label`.")
    probabilities: dict[str, float] = Field(description=(
        "Each label's probability, highest first (the top `top_k` only, when given)."))
    model_id: int = Field(description="The model version that answered.")
    unknown: bool = Field(description=(
        "True for “none of these”: the `unknown_score` is below `threshold`, and `answer` is "
        "null."))
    threshold: float | None = Field(description=(
        "The value of `unknown_score` below which the answer is “none of these”: the "
        "deployment's own, else the one calibrated when the model was trained; null: never."))
    unknown_score: Literal[FAMILIARITY, PROBABILITY] = Field(  # type: ignore[valid-type]
        default=PROBABILITY, description=(
            "What `threshold` applies to: `familiarity` (models trained with a feature bank) "
            "or `max_probability`, the `confidence` (older models)."))
    familiarity: float | None = Field(default=None, ge=0, le=1, description=(
        "How like the photos the model was trained on this photo is: the share of those "
        "photos that were less like the others (each compared without its own fold) than "
        "this one is like them. A threshold of 0.03 rejects about 3% of genuine photos. "
        "Null for older models."))
    unknown_reason: str | None = Field(default=None, description=(
        "Why the answer is “none of these”, in words, with the score and the threshold; "
        "null when `answer` is a label."))


class PredictionsOut(BaseModel):
    predictions: list[PredictionOut] = Field(description="One per file, in the order sent.")


class LogAddIn(Strict):
    ids: list[int] = Field(min_length=1, max_length=MAX_ADD,
                           description="ids of the deployment's logged predictions")
    label: str | None = Field(default=None, max_length=MAX_NAME,
                              description="a label for every photo; null: the inbox")


class InboxAcceptIn(Strict):
    min_confidence: float = Field(ge=0, le=1, description="accept every suggestion at least "
                                  "this confident")
    cluster: int | None = Field(default=None, ge=0, le=2**31 - 1,
                                description="only in this cluster")
