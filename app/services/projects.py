"""Projects and their labels."""

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.models import Deployment, Image, Label, Project, SearchResult, User
from app.services.errors import ConflictError, InvalidInputError, NotFoundError
from app.storage import Storage

MAX_NAME = 200


def clean_name(value: str, *, what: str) -> str:
    """A trimmed, non-empty name of bounded length."""
    name = " ".join(value.split())
    if not name:
        raise InvalidInputError(f"{what} must not be empty")
    if len(name) > MAX_NAME:
        raise InvalidInputError(f"{what} is longer than {MAX_NAME} characters")
    return name


def create_project(*, session: Session, owner: User, name: str, labels: list[str] = ()) -> Project:
    """Create a project, optionally with labels."""
    project = Project(owner_id=owner.id, name=clean_name(name, what="project name"))
    session.add(project)
    session.flush()
    for label in labels:
        add_label(session=session, project=project, name=label)
    return project


def list_projects(*, session: Session, owner: User) -> list[Project]:
    return list(session.scalars(select(Project).where(Project.owner_id == owner.id)))


def get_project(*, session: Session, owner: User, project_id: int) -> Project:
    """The owner's project, or NotFoundError (also for other users' projects)."""
    project = session.get(Project, project_id)
    if project is None or project.owner_id != owner.id:
        raise NotFoundError(f"project {project_id} not found")
    return project


def rename_project(*, session: Session, project: Project, name: str) -> Project:
    project.name = clean_name(name, what="project name")
    session.flush()
    return project


def delete_project(*, session: Session, storage: Storage, project: Project) -> None:
    """Delete a project, then (once that is committed) its stored files."""
    deployment_ids = session.scalars(
        select(Deployment.id).where(Deployment.project_id == project.id)
    ).all()
    prefixes = [f"images/{project.id}", f"models/{project.id}", f"thumbs/images/{project.id}"]
    prefixes += [f"predictions/{deployment_id}" for deployment_id in deployment_ids]
    session.delete(project)
    session.commit()
    for prefix in prefixes:
        storage.delete_prefix(prefix)


def add_label(*, session: Session, project: Project, name: str, query: str | None = None) -> Label:
    """Add a label; its web-search query defaults to its name."""
    name = clean_name(name, what="label name")
    if any(label.name.lower() == name.lower() for label in project.labels):
        raise ConflictError(f"label {name!r} exists already in this project")
    label = Label(project_id=project.id, name=name, query=(query or name).strip()[:500])
    project.labels.append(label)
    session.flush()
    return label


def get_label(*, project: Project, label_id: int) -> Label:
    """The project's label with this id, or NotFoundError."""
    for label in project.labels:
        if label.id == label_id:
            return label
    raise NotFoundError(f"label {label_id} not found in project {project.id}")


def update_label(*, session: Session, project: Project, label: Label, name: str | None = None,
                 query: str | None = None) -> Label:
    """Rename a label and/or change its search query (blank: the name); an unchanged query
    that was the old name follows the new name. Models trained before keep the names they
    were trained with."""
    old_name, old_query = label.name, label.query
    if name is not None:
        name = clean_name(name, what="label name")
        if any(other.id != label.id and other.name.lower() == name.lower()
               for other in project.labels):
            raise ConflictError(f"label {name!r} exists already in this project")
        label.name = name
    query = " ".join(query.split()) if query is not None else old_query
    if query == old_query == old_name:
        query = label.name
    label.query = (query or label.name)[:500]
    session.flush()
    return label


def delete_label(*, session: Session, project: Project, label: Label) -> int:
    """Delete a label. Its images stay in the project, unlabelled (so left out of training
    until someone relabels them in the grid): nothing a person gathered is lost by a click.
    Returns how many images lost the label."""
    unlabelled = session.execute(
        update(Image).where(Image.label_id == label.id).values(label_id=None)
        .execution_options(synchronize_session=False)).rowcount
    session.execute(update(SearchResult).where(SearchResult.label_id == label.id)
                    .values(label_id=None).execution_options(synchronize_session=False))
    project.labels.remove(label)  # delete-orphan: the row goes at flush
    session.flush()
    session.expire_all()
    return unlabelled


def label_image_totals(*, session: Session, project: Project) -> dict[int, int]:
    """Images per label id, active and excluded."""
    rows = session.execute(
        select(Image.label_id, func.count(Image.id))
        .where(Image.project_id == project.id, Image.label_id.is_not(None))
        .group_by(Image.label_id))
    return {label_id: count for label_id, count in rows}


def find_label(*, project: Project, name: str) -> Label:
    """The project's label called `name` (case-insensitive), or NotFoundError."""
    for label in project.labels:
        if label.name.lower() == name.strip().lower():
            return label
    raise NotFoundError(f"label {name!r} not found in project {project.id}")


def image_counts(*, session: Session, project: Project) -> dict[str, int]:
    """Active images per label name."""
    rows = session.execute(
        select(Label.name, func.count(Image.id))
        .join(Image, Image.label_id == Label.id)
        .where(Label.project_id == project.id, Image.status == "active")
        .group_by(Label.name)
    )
    counts = {label.name: 0 for label in project.labels}
    counts.update({name: count for name, count in rows})
    return counts
