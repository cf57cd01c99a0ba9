"""Label assist against labelling one image at a time, on the bears with their labels hidden.

Usage: python bench/label.py [--seed-per-label 5] [--first-clusters 3] [--accept 0.9] [--no-scale]
Data: $KODIAK_DATA_DIR (default ../shared/data next to the repo). Writes bench/results/label.json.

A fresh Kodiak (SQLite and local storage in a temporary home, the app through its HTTP API
in-process) gets `--seed-per-label` photos of each label with their labels and every other
bear photo without one (the inbox). Jobs run in this process, as a worker runs them
(`training.run_training`, `label_assist.run_organize`), whenever one is queued: the uploads
queue an organize job (embed, group by look), a training queues one too (suggestions). A
simulated person who knows the true labels uses only the inbox's actions, each counted once:
  1. "Label this cluster" for the `--first-clusters` largest groups by look: the group's
     majority true label (one action), then each photo in it whose true label differs is
     fixed on its own ("fix one", one action each).
  2. "Train" (the default recipe; the organize job after it suggests a label for every
     inbox photo).
  3. "Accept every suggestion at least --accept confident" (one action, whatever the count).
  4. Every group of what is left, largest first, as in 1.
The baseline labels each inbox photo with one action. `agreement` is the share of inbox photos
whose final label is their true label (a wrong suggestion accepted in 3 stays wrong: the
person does not check accepted photos one by one). `scale_100k` times the numpy parts on
100,000 random 1280-d vectors: grouping as organize does it, the distances to 10,000
labelled ones, and one similar-images search.
"""

import argparse
import json
import tempfile
import time
from collections import Counter
from pathlib import Path

from common import RESULTS, bear_labels, bear_photos, machine_info


class Person:
    """The simulated person: the API client, the truth, and an action counter."""

    def __init__(self, client, pid: int, truth: dict[int, str]):
        self.client, self.pid, self.truth = client, pid, truth
        self.actions: Counter = Counter()

    def api(self, method: str, path: str, **kwargs):
        answer = self.client.request(method, f"/api/v1{path}", **kwargs)
        assert answer.status_code < 300, answer.text
        return answer.json()

    def label(self, ids: list[int], label: str, *, action: str) -> None:
        self.api("POST", f"/projects/{self.pid}/images/bulk",
                 json={"image_ids": ids, "label": label})
        self.actions[action] += 1

    def inbox(self, **query) -> dict:
        return self.api("GET", f"/projects/{self.pid}/inbox", params={"limit": 500, **query})


def run_jobs(client) -> list[dict]:
    """Run every queued job in this process, as a worker would (organize after a training
    included); their final state."""
    from sqlalchemy import select

    from app.models import Job
    from app.services import label_assist, training

    state, done = client.app.state, []
    work = {"training": training.run_training, "organize": label_assist.run_organize}
    while True:
        with state.session_factory() as session:
            job = session.scalar(select(Job).where(Job.status == "queued").order_by(Job.id))
            if job is None:
                return done
            kind, job_id = job.kind, job.id
        started = time.perf_counter()
        work[kind](factory=state.session_factory, storage=state.storage,
                   settings=state.settings, job_id=job_id)
        if kind == "training":
            label_assist.organize_after(factory=state.session_factory,
                                        settings=state.settings, job_id=job_id)
        with state.session_factory() as session:
            job = session.get(Job, job_id)
            assert job.status == "succeeded", job.error
            done.append({"kind": kind, "s": round(time.perf_counter() - started, 1),
                         "result": job.result})


def simulate(*, seed_per_label: int, accept: float, first_clusters: int, home: Path) -> dict:
    from fastapi.testclient import TestClient

    from app.cli import migrate
    from app.config import Settings
    from app.web.main import create_app

    settings = Settings(home=home, admin_email="admin@example.com",
                        admin_password="admin-password-1",
                        database_url=f"sqlite:///{home / 'kodiak.db'}", broker_url="memory://",
                        storage_url=f"file://{home / 'storage'}")
    migrate(settings)
    labels = bear_labels()
    with TestClient(create_app(settings)) as client:
        login = client.post("/api/v1/session", json={"email": "admin@example.com",
                                                     "password": "admin-password-1"})
        client.headers["X-CSRF-Token"] = login.json()["csrf_token"]
        pid = client.post("/api/v1/projects", json={"name": "Bears", "labels": labels}).json()["id"]
        truth: dict[int, str] = {}
        for label in labels:
            photos = bear_photos(label)
            seed = client.post(f"/api/v1/projects/{pid}/images", data={"label": label}, files=[
                ("files", (p.name, p.read_bytes(), "image/jpeg")) for p in photos[:seed_per_label]])
            assert seed.status_code == 201, seed.text
            for start in range(seed_per_label, len(photos), 100):
                batch = photos[start:start + 100]
                added = client.post(f"/api/v1/projects/{pid}/images", files=[
                    ("files", (p.name, p.read_bytes(), "image/jpeg")) for p in batch])
                assert added.status_code == 201, added.text
                truth |= {entry["image_id"]: label for entry in added.json()["added"]}
        person = Person(client, pid, truth)
        jobs = run_jobs(client)  # the uploads queued an organize job: embeds, clusters

        first = sorted(person.inbox()["clusters"], key=lambda c: -c["size"])[:first_clusters]
        for cluster in first:  # 1. the largest groups by look, labelled a group at a time
            label_cluster(person, cluster["id"])
        started = person.api("POST", f"/projects/{pid}/trainings", json={})  # 2. train
        person.actions["train"] += 1
        jobs += run_jobs(client)  # the training, then the organize job it started

        accepted = person.api("POST", f"/projects/{pid}/inbox/accept",  # 3. accept
                              json={"min_confidence": accept})
        person.actions["accept"] += 1
        given = _labels_of(person, accepted["changed"])
        wrong_accepted = sum(truth[i] != label for i, label in given.items())

        page = person.inbox()  # 4. the groups of what is left, largest first
        for cluster in sorted(page["clusters"], key=lambda c: -c["size"]):
            label_cluster(person, cluster["id"])
        for item in person.inbox()["items"]:  # anything no cluster held (none expected)
            person.label([item["id"]], truth[item["id"]], action="fix_one")

        final = {image["id"]: image["label"] for image in person.api(
            "GET", f"/projects/{pid}/images", params={"limit": 1000})["images"]}
    agreement = sum(final[i] == label for i, label in truth.items()) / len(truth)
    actions = sum(person.actions.values())
    return {"actions": actions, "baseline_actions": len(truth),
            "actions_ratio": round(actions / len(truth), 4), "agreement": round(agreement, 4),
            "actions_by_kind": dict(person.actions), "inbox_images": len(truth),
            "seed_per_label": seed_per_label, "accept_min_confidence": accept,
            "first_clusters": first_clusters,
            "accepted": accepted["accepted"], "accepted_wrong": wrong_accepted,
            "training_job": started["id"],
            "clusters": len(page["clusters"]), "left_after_accept": page["total"],
            "jobs": jobs}


def label_cluster(person: Person, cluster: int) -> None:
    """Label a cluster with its majority true label (one action), then fix each image whose
    true label differs (one action each)."""
    ids = [item["id"] for item in person.inbox(cluster=cluster)["items"]]
    if not ids:
        return
    majority = Counter(person.truth[i] for i in ids).most_common(1)[0][0]
    person.label(ids, majority, action="label_cluster")
    for image_id in ids:
        if person.truth[image_id] != majority:
            person.label([image_id], person.truth[image_id], action="fix_one")


def _labels_of(person: Person, ids: list[int]) -> dict[int, str]:
    images = person.api("GET", f"/projects/{person.pid}/images", params={"limit": 1000})
    wanted = set(ids)
    return {image["id"]: image["label"] for image in images["images"] if image["id"] in wanted}


def scale(n: int = 100_000, dims: int = 1280) -> dict:
    """Clustering (as organize does it) and one similar-images search over n random unit
    vectors: seconds."""
    import numpy as np
    from threadpoolctl import threadpool_limits

    from app.services import label_assist
    from app.services.embeddings import unit_rows

    vectors = unit_rows(np.random.default_rng(0).standard_normal((n, dims), dtype=np.float32))
    with threadpool_limits(limits=1, user_api="blas"):
        tick = time.perf_counter()
        points = label_assist.in_axes(vectors, label_assist.principal_axes(vectors))
        clusters, _ = label_assist.group_by_look(points, n_labels=3)
        cluster_s = time.perf_counter() - tick
        tick = time.perf_counter()
        novelty = label_assist.nearest_distance(points[: n - 10_000], points[n - 10_000:])
        novelty_s = time.perf_counter() - tick
        tick = time.perf_counter()
        for query in range(10):
            distance = 1 - vectors @ vectors[query]
            nearest = np.argpartition(distance, 25)[:25]
            nearest[np.argsort(distance[nearest])]
        similar_ms = (time.perf_counter() - tick) / 10 * 1000
    return {"vectors": n, "dims": dims, "clusters": int(clusters.max()) + 1,
            "cluster_s": round(cluster_s, 1), "labelled_distance_s": round(novelty_s, 1),
            "labelled_distance_shape": [n - 10_000, 10_000], "similar_ms": round(similar_ms, 1),
            "novelty_rows": len(novelty)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed-per-label", type=int, default=5)
    parser.add_argument("--accept", type=float, default=0.9)
    parser.add_argument("--first-clusters", type=int, default=3,
                        help="groups labelled before the first training")
    parser.add_argument("--no-scale", action="store_true", help="skip the 100,000-vector timing")
    args = parser.parse_args()
    tick = time.perf_counter()
    with tempfile.TemporaryDirectory() as home:
        result = simulate(seed_per_label=args.seed_per_label, accept=args.accept,
                          first_clusters=args.first_clusters, home=Path(home))
    result["wall_s"] = round(time.perf_counter() - tick, 1)
    if not args.no_scale:
        result["scale_100k"] = scale()
    result["machine"] = machine_info()
    print(json.dumps(result, indent=2))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "label.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
