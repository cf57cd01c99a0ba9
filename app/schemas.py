"""Request bodies of the JSON API (validated by pydantic; errors become 422 with detail)."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.services.accounts import MIN_PASSWORD_CHARS
from app.services.auth import MAX_PASSWORD_CHARS
from app.services.curation import MAX_BULK
from app.services.datasets import IMAGE_STATUSES
from app.services.deployments import SLUG_PATTERN
from app.services.gathering import MAX_IMAGES, MAX_URLS
from app.services.projects import MAX_NAME

BACKBONE_NAMES = ("efficientnet_lite0",)
ImageStatus = Literal[IMAGE_STATUSES]  # type: ignore[valid-type]


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


class LabelIn(Strict):
    name: str = Field(min_length=1, max_length=MAX_NAME)
    query: str | None = Field(default=None, max_length=500)


class ImagePatch(Strict):
    label: str | None = None
    status: ImageStatus | None = None


class BulkIn(Strict):
    image_ids: list[int] = Field(min_length=1, max_length=MAX_BULK)
    label: str | None = Field(default=None, max_length=MAX_NAME)
    status: ImageStatus | None = None


class SearchIn(Strict):
    label: str = Field(min_length=1, max_length=MAX_NAME)
    query: str | None = Field(default=None, max_length=500)
    max_images: int | None = Field(default=None, ge=1, le=MAX_IMAGES)
    provider: str | None = Field(default=None, max_length=50)


class UrlImportIn(Strict):
    label: str = Field(min_length=1, max_length=MAX_NAME)
    urls: list[str] = Field(min_length=1, max_length=MAX_URLS)


class TrainingIn(Strict):
    """A training recipe; omitted fields take the recipe's defaults."""

    backbone: Literal[BACKBONE_NAMES] | None = None  # type: ignore[valid-type]
    epochs: int | None = Field(default=None, ge=0, le=50)
    frozen_epochs: int | None = Field(default=None, ge=1, le=50)
    lr: float | None = Field(default=None, gt=0, le=1)
    unfrozen_lr: float | None = Field(default=None, gt=0, le=1)
    batch_size: int | None = Field(default=None, ge=2, le=512)
    valid_pct: float | None = Field(default=None, gt=0, le=0.5)
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)
    label_smoothing: float | None = Field(default=None, ge=0, lt=1)
    augment_views: int | None = Field(default=None, ge=0, le=8)
    image_size: int | None = Field(default=None, ge=64, le=512)


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
