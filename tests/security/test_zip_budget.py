"""Zips read member by member under one budget per request: hostile members are per-file
rejections with reasons (201), a zip that cannot be read is one, and nothing stored changes."""

import hashlib
import io
import struct
import zipfile

import pytest
from PIL import Image

from app.db import make_engine, make_session_factory, session_scope
from app.services import auth, datasets, exports, projects
from app.storage import open_storage

LIMITS = datasets.Limits(max_pixels=60_000_000, max_zip_members=100, max_zip_bytes=2**28)


def photos(data_dir, label: str, count: int, start: int = 0) -> list[tuple[str, bytes]]:
    paths = sorted((data_dir / "bears" / label).glob("*.jpg"))[start:start + count]
    return [(f"{label}/{p.name}", p.read_bytes()) for p in paths]


def make_zip(members: list[tuple[str, bytes]], compression=zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=compression) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return out.getvalue()


def patch_member(data: bytes, name: str, **fields: int) -> bytes:
    """The zip with these header fields of one member changed, in its local header and its
    central directory entry alike: flag, method, crc, packed, size."""
    local_at = {"flag": (6, "<H"), "method": (8, "<H"), "crc": (14, "<I"),
                "packed": (18, "<I"), "size": (22, "<I")}
    central_at = {"flag": (8, "<H"), "method": (10, "<H"), "crc": (16, "<I"),
                  "packed": (20, "<I"), "size": (24, "<I")}
    out = bytearray(data)
    local = zipfile.ZipFile(io.BytesIO(data)).getinfo(name).header_offset
    central = out.index(b"PK\x01\x02")
    while out[central + 46:central + 46 + len(name)] != name.encode():
        central = out.index(b"PK\x01\x02", central + 4)
    for field, value in fields.items():
        struct.pack_into(local_at[field][1], out, local + local_at[field][0], value)
        struct.pack_into(central_at[field][1], out, central + central_at[field][0], value)
    return bytes(out)


def flip_data_byte(data: bytes, name: str) -> bytes:
    """The zip with one byte in the middle of a member's stored data changed."""
    info = zipfile.ZipFile(io.BytesIO(data)).getinfo(name)
    start = info.header_offset
    name_len, extra_len = struct.unpack_from("<HH", data, start + 26)
    at = start + 30 + name_len + extra_len + info.compress_size // 2
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:]


def image_bytes(fmt: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(out, fmt)
    return out.getvalue()


def reasons(answer: dict) -> dict[str, str]:
    return {r["filename"]: r["reason"] for r in answer["rejected"]}


@pytest.fixture
def project(client, admin):
    return client.post("/api/v1/projects", json={"name": "Bears", "labels": ["black"]},
                       headers=admin).json()


def stored_state(client, headers, project_id) -> dict:
    """Every image row and the hash of its stored bytes."""
    rows = client.get(f"/api/v1/projects/{project_id}/images?limit=1000", headers=headers).json()
    return {image["id"]: (image["label"], image["status"], hashlib.sha256(
        client.get(image["file_url"], headers=headers).content).hexdigest())
        for image in rows["images"]}


def upload(client, headers, project_id, files):
    return client.post(f"/api/v1/projects/{project_id}/images", headers=headers,
                       files=[("files", item) for item in files])


def test_hostile_members_are_rejected_one_by_one(client, admin, project, data_dir):
    pid = project["id"]
    before_upload = upload(client, admin, pid, [("first.zip", make_zip(photos(data_dir,
                                                                            "black", 3)))])
    assert before_upload.status_code == 201 and len(before_upload.json()["added"]) == 3
    before = stored_state(client, admin, pid)

    good = photos(data_dir, "grizzly", 2)
    zeros = b"\0" * (12 * 2**20)  # 12 MB of zeros pack to about 12 KB: 1000:1
    inner = make_zip(photos(data_dir, "teddy", 1))
    hostile = make_zip([
        *good,
        ("grizzly/bomb.jpg", zeros),
        ("grizzly/inner.zip", inner),
        ("grizzly/inner-in-disguise.jpg", inner),
        ("grizzly/readme.txt", b"not a photo at all\n" * 20),
        ("grizzly/icon.ico", image_bytes("ICO")),
        ("grizzly/pcx.pcx", image_bytes("PCX")),
        ("grizzly/locked.jpg", photos(data_dir, "teddy", 1, start=1)[0][1]),
        ("grizzly/odd-method.jpg", photos(data_dir, "teddy", 1, start=2)[0][1]),
        ("../escape.jpg", photos(data_dir, "teddy", 1, start=3)[0][1]),
    ])
    hostile = patch_member(hostile, "grizzly/locked.jpg", flag=0x1)  # "encrypted"
    hostile = patch_member(hostile, "grizzly/odd-method.jpg", method=9)  # deflate64
    stored = make_zip([("grizzly/bad-crc.jpg", photos(data_dir, "teddy", 1, start=4)[0][1]),
                       ("grizzly/cut.jpg", photos(data_dir, "teddy", 1, start=5)[0][1])],
                      compression=zipfile.ZIP_STORED)
    stored = flip_data_byte(stored, "grizzly/bad-crc.jpg")
    cut = zipfile.ZipFile(io.BytesIO(stored)).getinfo("grizzly/cut.jpg")
    stored = patch_member(stored, "grizzly/cut.jpg", packed=cut.compress_size // 2,
                          size=cut.file_size // 2)  # the member ends half way: CRC fails
    answer = upload(client, admin, pid, [("hostile.zip", hostile), ("stored.zip", stored),
                                         ("broken.zip", b"PK\x03\x04" + b"\x00" * 200)])
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert sorted(a["filename"] for a in body["added"]) == sorted(
        f"hostile.zip:{name}" for name, _ in good)
    why = reasons(body)
    assert "compressed more than 100:1" in why["hostile.zip:grizzly/bomb.jpg"]
    assert "archive inside a zip" in why["hostile.zip:grizzly/inner.zip"]
    assert "archive inside a zip" in why["hostile.zip:grizzly/inner-in-disguise.jpg"]
    for name in ("readme.txt", "icon.ico", "pcx.pcx"):
        assert "not an image in an accepted format" in why[f"hostile.zip:grizzly/{name}"]
    assert "encrypted" in why["hostile.zip:grizzly/locked.jpg"]
    assert "unsupported method" in why["hostile.zip:grizzly/odd-method.jpg"]
    assert why["hostile.zip:../escape.jpg"] == "unsafe path in zip"
    assert "damaged in the zip" in why["stored.zip:grizzly/bad-crc.jpg"]
    assert "CRC" in why["stored.zip:grizzly/bad-crc.jpg"]
    assert "damaged in the zip" in why["stored.zip:grizzly/cut.jpg"]
    assert why["broken.zip"] == "not a readable zip file"
    assert len(body["rejected"]) == 12

    after = stored_state(client, admin, pid)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing stored changed
    assert len(after) == len(before) + len(good)


def test_a_header_that_understates_a_member_is_not_believed(client, admin, project, data_dir):
    """The header says 2 KB; the data would expand to 12 MB: reading stops at 2 KB."""
    bomb = make_zip([("black/small.jpg", b"\0" * (12 * 2**20))])
    bomb = patch_member(bomb, "black/small.jpg", size=2048)
    answer = upload(client, admin, project["id"], [("liar.zip", bomb)])
    assert answer.status_code == 201
    assert "damaged in the zip" in reasons(answer.json())["liar.zip:black/small.jpg"]


def test_an_import_takes_the_same_rejections(client, admin, project, data_dir):
    pid = project["id"]
    hostile = make_zip([*photos(data_dir, "black", 1), ("black/bomb.jpg", b"\0" * 2**23),
                        ("black/inner.zip", make_zip(photos(data_dir, "teddy", 1)))])
    answer = client.post(f"/api/v1/projects/{pid}/imports", headers=admin,
                         files={"file": ("dataset.zip", hostile)})
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert len(body["added"]) == 1
    why = reasons(body)
    assert "compressed more than" in why["dataset.zip:black/bomb.jpg"]
    assert "archive inside a zip" in why["dataset.zip:black/inner.zip"]
    unreadable = client.post(f"/api/v1/projects/{pid}/imports", headers=admin,
                             files={"file": ("x.zip", b"PK\x03\x04garbage")})
    assert unreadable.status_code == 201
    assert unreadable.json()["rejected"] == [{"filename": "x.zip",
                                              "reason": "not a readable zip file"}]


@pytest.fixture
def service(settings):
    """A session factory, storage and a project, for calling the dataset service directly."""
    factory = make_session_factory(make_engine(settings.resolved_database_url()))
    storage = open_storage(settings.resolved_storage_url(), settings)
    with session_scope(factory) as session:
        user = auth.create_user(session=session, email="z@example.com", password="pw-123456")
        project_id = projects.create_project(session=session, owner=user, name="p").id
    return factory, storage, project_id


def add(service, uploads, limits):
    factory, storage, project_id = service
    with session_scope(factory) as session:
        project = session.get(projects.Project, project_id)
        return datasets.add_images(session=session, storage=storage, project=project,
                                   uploads=uploads, limits=limits)


def test_the_file_count_spans_every_zip_and_file_of_a_request(service, data_dir):
    limits = datasets.Limits(max_pixels=60_000_000, max_zip_members=6, max_zip_bytes=2**28)
    first, second = photos(data_dir, "black", 4), photos(data_dir, "black", 4, start=4)
    loose = photos(data_dir, "grizzly", 3)
    result = add(service, [
        datasets.Upload(filename="a.zip", data=make_zip(first)),
        datasets.Upload(filename="b.zip", data=make_zip(second)),
        *[datasets.Upload(filename=name, data=data, label="grizzly") for name, data in loose],
    ], limits)
    assert len(result.added) == 6  # a.zip's 4, then 2 loose files
    why = reasons(result.as_dict())
    assert why["b.zip"] == "zip has 4 files; one request may hold 6 (2 left)"
    assert "more than 6 files in one request" in why[loose[2][0]]


def test_a_zip_directory_too_long_for_the_request_is_not_parsed(service, monkeypatch):
    """Millions of tiny entries would cost memory in zipfile's directory alone: the end
    record's count is checked first."""
    limits = datasets.Limits(max_pixels=60_000_000, max_zip_members=10, max_zip_bytes=2**28)
    many = make_zip([(f"black/{n}.jpg", b"") for n in range(1100)])
    parsed = []
    monkeypatch.setattr(zipfile.ZipFile, "_RealGetContents", lambda self: parsed.append(1))
    result = add(service, [datasets.Upload(filename="many.zip", data=many)], limits)
    assert parsed == []
    assert reasons(result.as_dict())["many.zip"].startswith("zip lists 1100 entries")


def test_the_expanded_bytes_span_every_zip_of_a_request(service, data_dir):
    first, second = photos(data_dir, "black", 3), photos(data_dir, "black", 3, start=3)
    budget = sum(len(data) for _, data in first) + 1000
    limits = datasets.Limits(max_pixels=60_000_000, max_zip_members=100, max_zip_bytes=budget)
    result = add(service, [datasets.Upload(filename="a.zip", data=make_zip(first)),
                           datasets.Upload(filename="b.zip", data=make_zip(second))], limits)
    assert len(result.added) == 3
    assert reasons(result.as_dict())["b.zip"].startswith("zip expands to ")


def test_one_member_past_the_bytes_left_is_rejected_and_the_rest_read(service, data_dir):
    """Members whose declared sizes fit but whose running count would not are stopped."""
    members = photos(data_dir, "black", 3)
    limits = datasets.Limits(max_pixels=60_000_000, max_zip_members=100, max_zip_bytes=2**28,
                             max_file_bytes=max(len(d) for _, d in members) - 1)
    result = add(service, [datasets.Upload(filename="a.zip", data=make_zip(members))], limits)
    why = reasons(result.as_dict())
    biggest = max(members, key=lambda m: len(m[1]))[0]
    assert "the limit for one image file" in why[f"a.zip:{biggest}"]
    assert len(result.added) == 2


def test_an_import_with_a_damaged_provenance_is_one_rejection(service, data_dir):
    factory, storage, project_id = service
    data = make_zip([*photos(data_dir, "black", 1), ("provenance.csv", b"file,label\n" * 50)])
    data = patch_member(data, "provenance.csv", flag=0x1)
    with session_scope(factory) as session:
        project = session.get(projects.Project, project_id)
        result = exports.import_dataset(session=session, storage=storage, project=project,
                                        data=data, filename="d.zip", limits=LIMITS)
    assert result.added == [] and len(result.rejected) == 1
    assert result.rejected[0]["filename"] == "d.zip:provenance.csv"
