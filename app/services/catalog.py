"""A project's images as people browse and edit them: pages of the grid, one image, a
relabel or exclusion, near-duplicate groups."""

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from app.models import Image, ImageEvent, Project, SearchResult, User, utcnow
from app.services.errors import InvalidInputError, NotFoundError
from app.services.projects import find_label

IMAGE_STATUSES = ("active", "excluded")
SORTS = {
    "newest": Image.id.desc(),
    "oldest": Image.id.asc(),
}


def duplicate_groups(*, session: Session, project: Project, limit: int = 200
                     ) -> list[list[Image]]:
    """The project's unresolved near-duplicate groups (two or more active images each; the
    excluded ones shown with them), largest first. A group where a person kept one is gone."""
    size = func.count(Image.id)
    active = func.sum(case((Image.status == "active", 1), else_=0))
    names = list(session.scalars(
        select(Image.duplicate_group)
        .where(Image.project_id == project.id, Image.duplicate_group.is_not(None))
        .group_by(Image.duplicate_group).having(active > 1)
        .order_by(size.desc(), func.min(Image.id)).limit(limit)
    ))
    by_group: dict[str, list[Image]] = {name: [] for name in names}
    for image in session.scalars(select(Image).where(
        Image.project_id == project.id, Image.duplicate_group.in_(names)
    ).order_by(Image.id)):
        by_group[image.duplicate_group].append(image)
    return list(by_group.values())


def list_images(
    *,
    session: Session,
    project: Project,
    label: str | None = None,
    status: str | None = None,
    sort: str = "oldest",
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[Image], int]:
    """A page of the project's images and the total that match the filters."""
    if sort not in SORTS:
        raise InvalidInputError(f"sort must be one of {', '.join(SORTS)}")
    if status is not None and status not in IMAGE_STATUSES:
        raise InvalidInputError(f"status must be one of {', '.join(IMAGE_STATUSES)}")
    query = select(Image).where(Image.project_id == project.id)
    if label:
        query = query.where(Image.label_id == find_label(project=project, name=label).id)
    if status:
        query = query.where(Image.status == status)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(SORTS[sort]).limit(limit).offset(offset))
    return list(rows), total


def images_by_id(*, session: Session, project: Project, image_ids: list[int]) -> dict[int, Image]:
    """The project's images among these ids, by id (ids of deleted images are left out)."""
    if not image_ids:
        return {}
    query = select(Image).where(Image.project_id == project.id, Image.id.in_(image_ids))
    return {image.id: image for image in session.scalars(query)}


def get_image(*, session: Session, project: Project, image_id: int) -> Image:
    """One image of this project, or NotFoundError."""
    image = session.get(Image, image_id)
    if image is None or image.project_id != project.id:
        raise NotFoundError(f"image {image_id} not found in this project")
    return image


def get_owned_image(*, session: Session, owner: User, image_id: int) -> Image:
    """An image of one of the owner's projects, or NotFoundError."""
    image = session.scalar(
        select(Image).join(Project, Project.id == Image.project_id)
        .where(Image.id == image_id, Project.owner_id == owner.id)
    )
    if image is None:
        raise NotFoundError(f"image {image_id} not found")
    return image


def update_image(
    *, session: Session, project: Project, image: Image, label: str | None, status: str | None,
    reviewed: bool | None = None,
) -> Image:
    """Relabel or exclude/restore an image; mark it reviewed (the review queue leaves it out)
    or not."""
    names = {row.id: row.name for row in project.labels}
    if label is not None:
        new_label = find_label(project=project, name=label).id
        if new_label != image.label_id:
            record_change(session=session, image=image, kind="label",
                          before=names.get(image.label_id), after=names[new_label])
        image.label_id = new_label
    if status is not None:
        if status not in IMAGE_STATUSES:
            raise InvalidInputError(f"status must be one of {', '.join(IMAGE_STATUSES)}")
        if status != image.status:
            record_change(session=session, image=image, kind="status", before=image.status,
                          after=status)
        image.status = status
    if reviewed is not None:
        image.reviewed_at = (image.reviewed_at or utcnow()) if reviewed else None
    session.flush()
    return image


def record_change(*, session: Session, image: Image, kind: str, before: str | None,
                  after: str | None) -> None:
    """Keep one label or status change in the image's history (written with the change)."""
    session.add(ImageEvent(image_id=image.id, kind=kind, before=before, after=after))


def image_history(*, session: Session, image: Image) -> list[ImageEvent]:
    """The changes people made to an image's label and status, oldest first."""
    return list(session.scalars(
        select(ImageEvent).where(ImageEvent.image_id == image.id).order_by(ImageEvent.id)))


def image_search_result(*, session: Session, image: Image) -> SearchResult | None:
    """The search result this image was filed from (its job and licence filter), if any."""
    return session.scalar(select(SearchResult).where(SearchResult.image_id == image.id)
                          .order_by(SearchResult.id).limit(1))
