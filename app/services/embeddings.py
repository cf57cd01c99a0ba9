"""The one store of image embeddings: each image's pooled features from a frozen pretrained
backbone, computed once per image and backbone by a worker (`label_assist.run_organize`) and
read as numpy by everything else (clustering, suggestions, similar images; training may reuse
them for the frozen phase). Torch-free: the web process reads them too."""

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.ml.recipe import Recipe
from app.models import Image, ImageEmbedding

DEFAULT_BACKBONE = Recipe().backbone
STORED_DTYPE = np.float16  # 2.5 KB an image for Lite0's 1280 features
INSERT = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


def missing(*, session: Session, project_id: int,
            backbone: str = DEFAULT_BACKBONE) -> list[tuple[int, str]]:
    """(id, storage key) of the project's active images that have no embedding yet."""
    stored = select(ImageEmbedding.image_id).where(ImageEmbedding.backbone == backbone,
                                                   ImageEmbedding.image_id == Image.id)
    query = (select(Image.id, Image.storage_key)
             .where(Image.project_id == project_id, Image.status == "active", ~stored.exists())
             .order_by(Image.id))
    return [(id_, key) for id_, key in session.execute(query)]


def save(*, session: Session, project_id: int, image_ids: list[int], vectors: np.ndarray,
         backbone: str = DEFAULT_BACKBONE) -> int:
    """Store one vector per image (a row already there is kept: a job may run twice)."""
    if not image_ids:
        return 0
    rows = [{"image_id": id_, "project_id": project_id, "backbone": backbone,
             "vector": np.ascontiguousarray(vector, dtype=STORED_DTYPE).tobytes()}
            for id_, vector in zip(image_ids, vectors, strict=True)]
    insert = INSERT[session.get_bind().dialect.name]
    statement = (insert(ImageEmbedding)
                 .on_conflict_do_nothing(index_elements=["image_id", "backbone"])
                 .returning(ImageEmbedding.id))
    return len(session.execute(statement, rows).all())


def load(*, session: Session, project_id: int, image_ids: list[int] | None = None,
         backbone: str = DEFAULT_BACKBONE) -> tuple[np.ndarray, np.ndarray]:
    """(image ids, float32 matrix, one row each) of the project's stored embeddings, all of
    them or those of `image_ids`, in id order."""
    query = (select(ImageEmbedding.image_id, ImageEmbedding.vector)
             .where(ImageEmbedding.project_id == project_id, ImageEmbedding.backbone == backbone)
             .order_by(ImageEmbedding.image_id))
    if image_ids is not None:
        query = query.where(ImageEmbedding.image_id.in_(image_ids))
    rows = session.execute(query).all()
    ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
    if not rows:
        return ids, np.zeros((0, 0), dtype=np.float32)
    matrix = np.frombuffer(b"".join(row[1] for row in rows), dtype=STORED_DTYPE)
    return ids, matrix.reshape(len(rows), -1).astype(np.float32)


def count(*, session: Session, image_ids_query, backbone: str = DEFAULT_BACKBONE) -> int:
    """How many of the images that `image_ids_query` selects have an embedding."""
    return session.scalar(select(func.count()).select_from(ImageEmbedding).where(
        ImageEmbedding.backbone == backbone,
        ImageEmbedding.image_id.in_(image_ids_query))) or 0


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (cosine similarity is then a dot product)."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, 1e-12)
