"""Hostile input beyond the HTTP schema: images, label configs and task data that people (or an
attacker) put in a project. Each bad item gets a per-task error or a one-line message, usable
odd images are read as people see them, and nothing else fails.

The hostile files are generated here with Pillow; `test_fuzz.py` fuzzes the HTTP API itself.
"""

from __future__ import annotations

import csv
import io
import json
import struct
import time
import zlib

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from ml_backend.__main__ import main
from ml_backend.label_config import UnsupportedConfig, parse_label_config
from ml_backend.image_hosts import ImageFetchError
from ml_backend.labelstudio import LabelStudioClient
from ml_backend.model_commands import predict_folder
from ml_backend.server import create_app
from ml_backend.settings import Settings
from ml_backend.steps import retrain
from model.images import BadImage, decode_image
from tests.unit.fakes import CONFIG

RED = (220, 30, 30)


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def red(size=(40, 20), mode="RGB") -> Image.Image:
    return Image.new("RGB", size, RED).convert(mode)


def claimed_size_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims `width` x `height` pixels: a decompression bomb's shape."""
    data = bytearray(encode(Image.new("RGB", (1, 1)), "PNG"))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def animation(fmt: str) -> bytes:
    frames = [Image.new("RGB", (40, 20), c) for c in (RED, (30, 200, 40), (30, 40, 220))]
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:])


def exif_rotated() -> bytes:
    """Stored 40 wide, 20 high, top half red; EXIF orientation 6 (rotate 90° clockwise to view):
    seen 20 wide, 40 high, right half red, left half blue."""
    img = Image.new("RGB", (40, 20), (30, 40, 220))
    img.paste(RED, (0, 0, 40, 10))
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(img, "JPEG", exif=exif.tobytes(), quality=95)


def grey16(value: int) -> Image.Image:
    return Image.fromarray(np.full((20, 40), value, dtype=np.uint16))


# name: (bytes, (width, height, top-left RGB) people see, or a fragment of the one-line error)
USABLE = {
    "cmyk.jpg": (lambda: encode(red(mode="CMYK"), "JPEG", quality=95), (40, 20, RED)),
    "cmyk.tif": (lambda: encode(red(mode="CMYK"), "TIFF"), (40, 20, RED)),
    "grey16.png": (lambda: encode(grey16(60000), "PNG"), (40, 20, (233, 233, 233))),
    "grey16.tif": (lambda: encode(grey16(60000), "TIFF"), (40, 20, (233, 233, 233))),
    "float.tif": (lambda: encode(Image.fromarray(np.full((20, 40), 0.5, np.float32)), "TIFF"),
                  (40, 20, (127, 127, 127))),
    "palette.png": (lambda: encode(red(mode="P"), "PNG", transparency=0), (40, 20, None)),
    "rgba.png": (lambda: encode(red(mode="RGBA"), "PNG"), (40, 20, RED)),
    "grey-alpha.png": (lambda: encode(red(mode="LA"), "PNG"), (40, 20, (87, 87, 87))),
    "animated.gif": (lambda: animation("GIF"), (40, 20, RED)),
    "animated.webp": (lambda: animation("WEBP"), (40, 20, RED)),
    "exif-rotated.jpg": (exif_rotated, (20, 40, (30, 40, 220))),
    "icon.bmp": (lambda: encode(red((1, 1)), "BMP"), (1, 1, RED)),
}
UNUSABLE = {
    "zero-byte.png": (lambda: b"", "not a format"),
    "drawing.svg.png": (lambda: b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9">'
                        b'<rect width="9" height="9"/></svg>', "not a format"),
    "truncated.jpg": (lambda: encode(red((400, 400)), "JPEG")[:300], "cannot decode"),
    "truncated.png": (lambda: encode(Image.fromarray(
        np.random.default_rng(0).integers(0, 255, (200, 200, 3), np.uint8)), "PNG")[:2000],
        "cannot decode"),
    "bomb-header.png": (lambda: claimed_size_png(40_000, 40_000), "too large"),
    "bomb-100M.png": (lambda: encode(Image.new("1", (10_000, 10_000)), "PNG"), "too large"),
    "postscript.png": (lambda: b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n",
                       "not a format"),
    "text.jpg": (lambda: "ñ not an image \udcff".encode("utf-8", "surrogateescape"),
                 "not a format"),
}


@pytest.fixture(scope="module")
def hostile() -> dict[str, bytes]:
    return {name: make() for name, (make, _) in (USABLE | UNUSABLE).items()}


@pytest.mark.parametrize("name", sorted(USABLE))
def test_an_odd_but_valid_image_is_read_as_people_see_it(hostile, name):
    width, height, top_left = USABLE[name][1]
    img = decode_image(hostile[name])
    assert (img.mode, img.size) == ("RGB", (width, height))
    if top_left is not None:
        assert np.abs(np.subtract(img.getpixel((0, 0)), top_left)).max() <= 6


@pytest.mark.parametrize("name", sorted(UNUSABLE))
def test_a_bad_image_is_refused_in_one_short_line(hostile, name):
    start = time.perf_counter()
    with pytest.raises(BadImage) as info:
        decode_image(hostile[name])
    message = str(info.value)
    assert UNUSABLE[name][1] in message and "\n" not in message and len(message) < 200
    assert time.perf_counter() - start < 5  # a bomb is refused, never decoded


# -- through the backend's paths -----------------------------------------------------------------
def hostile_tasks(fake_ls, hostile, labelled: bool) -> dict[str, int]:
    """A task per hostile image, labelled red when `labelled`; their ids by file name."""
    ids = {}
    for n, (name, data) in enumerate(sorted(hostile.items()), start=100):
        url = f"/data/local-files/?d=hostile/{name}"
        fake_ls.images[url] = data
        annotations = [fake_ls.annotation("red", n)] if labelled else []
        fake_ls.task_list.append({"id": n, "data": {"image": url}, "annotations": annotations})
        ids[name] = n
    return ids


ODD_URLS = ["file:///etc/passwd", "data:image/png;base64,iVBORw0KGgo=", "javascript:alert(1)",
            "gopher://127.0.0.1:6379/_FLUSHALL", "http://user:secret@ls.test:8080/a.png",
            "//elsewhere/x.png", "x" * 100_000, "/data/\udcff.png"]


def test_a_retrain_leaves_out_only_the_images_it_cannot_read(runtime, fake_ls, hostile):
    hostile_tasks(fake_ls, hostile, labelled=True)
    for n, url in enumerate(ODD_URLS, start=500):
        fake_ls.task_list.append({"id": n, "data": {"image": url, "big": "y" * 1_000_000},
                                  "annotations": [fake_ls.annotation("red", n)]})
    out = retrain(runtime, 1)
    labelled = sum(bool(t["annotations"]) for t in fake_ls.task_list)
    assert out["version"] == "v1"
    assert out["n_labels"] == labelled - len(UNUSABLE) - len(ODD_URLS)
    meta = runtime.versions(1).load("v1").meta
    assert meta["skipped"]["image errors"] == len(UNUSABLE) + len(ODD_URLS)


def test_predict_answers_every_task_and_only_unreadable_images_get_no_prediction(
        runtime, fake_ls, hostile):
    retrain(runtime, 1)
    ids = hostile_tasks(fake_ls, hostile, labelled=False)
    odd_urls = ODD_URLS
    tasks = [{"id": i, "data": {"image": f"/data/local-files/?d=hostile/{n}"}}
             for n, i in ids.items()]
    tasks += [{"id": 500 + n, "data": {"image": url}} for n, url in enumerate(odd_urls)]
    tasks += [{"id": 600, "data": {"image": {"nested": ["x"] * 10_000}, "big": "y" * 1_000_000}}]
    client = TestClient(create_app(runtime.settings, runtime))
    body = {"tasks": tasks, "project": "1.1", "label_config": CONFIG}  # "\udcff": a lone surrogate
    res = client.post("/predict", content=json.dumps(body),
                      headers={"content-type": "application/json"})
    assert res.status_code == 200, res.text
    results = res.json()["results"]
    assert len(results) == len(tasks)
    got = {t["id"]: bool(r["result"]) for t, r in zip(tasks, results)}
    assert {n for n, i in ids.items() if got[i]} == set(USABLE)
    assert not any(got[t["id"]] for t in tasks if t["id"] >= 500)


def test_a_request_body_that_is_not_utf8_is_a_4xx(runtime):
    client = TestClient(create_app(runtime.settings, runtime))
    body = b'{"tasks": [{"id": 1, "data": {"image": "\xff\xfe.png"}}], "project": 1}'
    res = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert 400 <= res.status_code < 500 and res.headers["content-type"] == "application/json"


@pytest.mark.parametrize("url", [
    "file:///etc/passwd", "data:image/png;base64,iVBORw0KGgo=", "javascript:alert(1)",
    "gopher://127.0.0.1:6379/_FLUSHALL", "ftp://ls.test/a.png", "http://elsewhere:8080/a.png",
    "http://ls.test:6379/a.png", "http://user:secret@elsewhere/a.png", "\\\\server\\share\\a.png",
    "data:" + "A" * 1_000_000,
])
def test_an_image_url_outside_label_studio_is_refused_without_echoing_secrets_or_bulk(url):
    ls = LabelStudioClient(Settings(label_studio_url="http://ls.test:8080", label_studio_api_key="k"))
    with pytest.raises(ImageFetchError) as info:
        ls.fetch_image(url)
    message = str(info.value)
    assert "secret" not in message and "\n" not in message and len(message) < 300


def test_predict_command_skips_bad_files_in_one_line_each(runtime, hostile, tmp_path, capsys):
    retrain(runtime, 1)
    folder = tmp_path / "in"
    folder.mkdir()
    for name, data in hostile.items():
        (folder / name).write_bytes(data)
    odd = folder / "odd-\udcffname.png"  # a file name that is not UTF-8
    odd.write_bytes(hostile["rgba.png"])
    out = predict_folder(runtime, 1, folder, tmp_path / "out.csv", progress=False)
    assert (out["predicted"], out["skipped"]) == (len(USABLE) + 1, len(UNUSABLE))
    err = capsys.readouterr().err
    assert sum(line.startswith("skipped ") for line in err.splitlines()) == len(UNUSABLE)
    with (tmp_path / "out.csv").open(newline="", errors="surrogateescape") as fh:
        assert str(odd) in {row["path"] for row in csv.DictReader(fh)}


def test_import_images_reports_files_it_cannot_read_and_imports_the_rest(hostile, tmp_path):
    from tests.unit.test_importer import RecordingLS
    from ml_backend.importer import import_images, read_sources

    folder = tmp_path / "set" / "red"
    folder.mkdir(parents=True)
    for name, data in hostile.items():
        (folder / name).write_bytes(data)
    ls = RecordingLS()
    report = import_images(ls, 1, read_sources([tmp_path / "set"]), labels=True)
    assert report.tasks == len(USABLE)
    assert len(report.unreadable) == len(UNUSABLE)
    text = "\n".join(report.lines(1))
    assert f"{len(UNUSABLE)} files are not images" in text


# -- label configs -------------------------------------------------------------------------------
LAUGHS = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
          + "".join(f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10}">'.replace("&lol0;", "&lol;")
                    for i in range(1, 10))
          + ']><View><Text name="t" value="&lol9;"/></View>')
EXTERNAL = ('<?xml version="1.0"?><!DOCTYPE v [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
            '<View><Header value="&x;"/></View>')
NESTED = "<View>" * 100_000 + "</View>" * 100_000
HUGE = ("<View>" + '<Header value="h"/>' * 500_000 + CONFIG[6:])
MANY_CHOICES = CONFIG.replace('<Choice value="blue"/>', "".join(
    f'<Choice value="c{i}"/>' for i in range(50_000)))


@pytest.mark.parametrize(("config", "message"), [
    (LAUGHS, "not valid XML"), (EXTERNAL, "not valid XML"), (NESTED, ""), (HUGE, ""),
    (MANY_CHOICES, ""), ("\udcff", ""), ("<View>" + "\x00" * 10 + "</View>", "not valid XML"),
])
def test_a_hostile_label_config_is_refused_in_one_line_quickly(config, message):
    start = time.perf_counter()
    try:
        parse_label_config(config)
    except UnsupportedConfig as exc:
        text = str(exc)
        assert message in text and "\n" not in text and len(text) < 300
    assert time.perf_counter() - start < 5


def test_setup_with_a_hostile_label_config_is_a_4xx(runtime):
    client = TestClient(create_app(runtime.settings, runtime))
    for config in (LAUGHS, EXTERNAL, NESTED):
        res = client.post("/setup", json={"project": "1.1", "schema": config})
        assert res.status_code == 422 and len(res.json()["detail"]) < 300
