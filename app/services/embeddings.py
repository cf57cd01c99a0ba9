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
    ids, matrix = load_stored(session=session, project_id=project_id, image_ids=image_ids,
                              backbone=backbone)
    order = np.argsort(ids, kind="stable")
    return ids[order], matrix[order].astype(np.float32)


def load_stored(*, session: Session, project_id: int, image_ids: list[int] | None = None,
                backbone: str = DEFAULT_BACKBONE) -> tuple[np.ndarray, np.ndarray]:
    """(image ids, the stored float16 matrix) in no particular order: half the memory of
    float32 and no sort (at 100,000 images, sorting in SQL and converting took 4 of 6 s)."""
    query = select(ImageEmbedding.image_id, ImageEmbedding.vector).where(
        ImageEmbedding.project_id == project_id, ImageEmbedding.backbone == backbone)
    if image_ids is not None:
        query = query.where(ImageEmbedding.image_id.in_(image_ids))
    size = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    ids = np.zeros(size, dtype=np.int64)
    matrix: np.ndarray | None = None
    done = 0
    # a block of rows at a time into one array, so no copy of the whole matrix is made
    for rows in session.execute(query.execution_options(yield_per=16384)).partitions():
        rows = rows[:size - done]  # rows added since the count wait for the next call
        block = np.frombuffer(b"".join(row[1] for row in rows), dtype=STORED_DTYPE)
        block = block.reshape(len(rows), -1)
        if matrix is None:
            matrix = np.empty((size, block.shape[1]), dtype=STORED_DTYPE)
        ids[done:done + len(rows)] = [row[0] for row in rows]
        matrix[done:done + len(rows)] = block
        done += len(rows)
    if matrix is None:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=STORED_DTYPE)
    return ids[:done], matrix[:done]


def cosine_distances(matrix: np.ndarray, query: np.ndarray, *, chunk: int = 8192) -> np.ndarray:
    """1 - cosine similarity of each row of `matrix` (any float dtype) with `query`, a block
    of rows at a time in float32 (no full-size float32 copy)."""
    query = query.astype(np.float32) / max(float(np.linalg.norm(query)), 1e-12)
    out = np.empty(len(matrix), dtype=np.float32)
    for start in range(0, len(matrix), chunk):
        block = matrix[start:start + chunk].astype(np.float32)
        norms = np.maximum(np.linalg.norm(block, axis=1), 1e-12)
        out[start:start + chunk] = 1 - (block @ query) / norms
    return out


def count(*, session: Session, image_ids_query, backbone: str = DEFAULT_BACKBONE) -> int:
    """How many of the images that `image_ids_query` selects have an embedding."""
    return session.scalar(select(func.count()).select_from(ImageEmbedding).where(
        ImageEmbedding.backbone == backbone,
        ImageEmbedding.image_id.in_(image_ids_query))) or 0


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (cosine similarity is then a dot product)."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, 1e-12)
