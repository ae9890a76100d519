"""A user's image folder as it really comes (built here with Pillow): what is trained on, what is
skipped and why, what is refused, and how every kind of image is turned into res x res RGB."""
import io
import os

import numpy as np
import pytest
from PIL import Image

from mgr.data import DataConfig, DataError, load
from mgr.imagefolder import FolderError, read_image, scan


def save(path, img, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)
    return path


def noise(w, h, level, mode="RGB"):
    rng = np.random.default_rng(level)
    return Image.fromarray((rng.random((h, w, 3)) * 60 + level).astype(np.uint8)).convert(mode)


def jpeg_bytes(img):
    buf = io.BytesIO()
    img.save(buf, format="JPEG")
    return buf.getvalue()


def messy(root):
    """Two real classes (cat: dark, dog: bright) among everything a folder from the wild holds."""
    for i, (w, h) in enumerate([(40, 20), (17, 33), (64, 64), (9, 300)]):  # sizes and aspect ratios vary
        save(root / "cat" / f"{i}.png", noise(w, h, 10 + i))
        save(root / "dog" / f"{i}.png", noise(h, w, 180 + i))
    save(root / "cat" / "grey.jpg", noise(30, 30, 20, "L"))
    save(root / "cat" / "rgba.png", noise(30, 30, 25, "RGBA"))
    save(root / "cat" / "cmyk.jpg", noise(30, 30, 30, "CMYK"))
    save(root / "cat" / "palette.gif", noise(30, 30, 15).convert("P"), transparency=0)
    save(root / "cat" / "png_named.jpg", noise(30, 30, 12), format="PNG")  # the wrong extension
    save(root / "cat" / "2019" / "nested.png", noise(30, 30, 14))  # a nested folder belongs to its class
    os.symlink(root / "cat" / "0.png", root / "cat" / "link.png")  # a symlinked file: read where it points
    os.symlink(root / "cat" / "gone.png", root / "cat" / "broken.png")
    (root / "cat" / "truncated.jpg").write_bytes(jpeg_bytes(noise(64, 64, 16))[:300])
    (root / "cat" / "notes.txt").write_text("my cats")
    (root / "cat" / "empty.png").write_bytes(b"")
    os.mkfifo(root / "cat" / "pipe.png")  # opening it would wait forever
    frames = [noise(20, 20, 11), noise(20, 20, 180)]
    frames[0].save(root / "cat" / "animated.gif", save_all=True, append_images=frames[1:])  # first frame used
    (root / "cat" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0" + bytes(60))
    (root / "cat" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    save(root / "cat" / ".thumbs" / "t.png", noise(8, 8, 10))
    good = io.BytesIO()
    noise(64, 64, 190).save(good, format="PNG")
    raw = bytearray(good.getvalue())
    raw[100:400] = os.urandom(300)  # the header intact, the pixel data garbage
    (root / "dog" / "corrupt.png").write_bytes(bytes(raw))
    save(root / "dog" / "bomb.png", Image.new("1", (8000, 6000)))  # 48 MP of nothing: a decompression bomb
    (root / "dog" / "fake.jpg").write_text("<html>not a picture</html>")
    (root / "empty").mkdir()
    (root / "only_text").mkdir()
    (root / "only_text" / "readme.md").write_text("no images here")
    (root / "README.txt").write_text("my dataset")
    os.symlink(root / "cat", root / "cat_link")  # a symlinked class folder is not followed
    return root


EXPECTED_SKIPS = {  # file -> the start of its reason
    ".": None,
    "README.txt": "not in a class folder",
    "cat_link": "symlinked folder, not followed",
    "cat/.DS_Store": "hidden",
    "cat/.thumbs": "hidden",
    "cat/broken.png": "broken symlink",
    "cat/notes.txt": "not an image",
    "cat/empty.png": "not an image",
    "cat/pipe.png": "not a regular file",
    "cat/Thumbs.db": "not an image",
    "cat/truncated.jpg": "truncated or corrupt",
    "dog/corrupt.png": "truncated or corrupt",
    "dog/bomb.png": "too large: 8000x6000 = 48 MP > 40 MP",
    "dog/fake.jpg": "not an image",
    "empty": "no usable image: not a class",
    "only_text/readme.md": "not an image",
    "only_text": "no usable image: not a class",
}
EXPECTED_SKIPS.pop(".")


def test_a_messy_folder_trains_on_its_images_and_reports_every_skipped_file(tmp_path):
    root = messy(tmp_path / "photos")
    found = scan(root, res=16)
    assert found.classes == ["cat", "dog"]
    assert found.counts() == {"cat": 12, "dog": 4}  # 4 + grey, rgba, cmyk, palette, png_named, nested, link, gif
    got = dict(found.skipped)
    assert set(got) == set(EXPECTED_SKIPS), set(got) ^ set(EXPECTED_SKIPS)
    for name, reason in EXPECTED_SKIPS.items():
        assert got[name].startswith(reason), (name, got[name])
    assert found.x_train.shape == (16, 3, 16, 16) and found.x_train.dtype == np.uint8

    d = load(DataConfig(f"imagefolder:{root}", resolution=16))  # the trainer's loader: same scan, same report
    assert d.classes == ["cat", "dog"] and d.skipped == found.skipped
    assert len(d.y_train) + len(d.y_val) + len(d.y_test) == 16
    assert "skipped 16 (" in d.summary() and "not an image" in d.summary()
    assert d.x_test[d.y_test == 1].mean() > d.x_test[d.y_test == 0].mean()  # labels follow folders


def pixel(img, res=4):
    arr, why = read_image(img, res)
    assert arr is not None, why
    return arr[:, res // 2, res // 2].tolist()


@pytest.mark.parametrize("name, make, rgb", [
    ("transparent RGBA is composited on white", lambda: Image.new("RGBA", (8, 8), (255, 0, 0, 0)), [255, 255, 255]),
    ("half-transparent black on white is grey", lambda: Image.new("RGBA", (8, 8), (0, 0, 0, 128)), [127, 127, 127]),
    ("grey with alpha", lambda: Image.new("LA", (8, 8), (0, 0)), [255, 255, 255]),
    ("a palette's transparent entry is white", lambda: Image.new("P", (8, 8), 3), [255, 255, 255]),
    ("CMYK without ink is white", lambda: Image.new("CMYK", (8, 8), (0, 0, 0, 0)), [255, 255, 255]),
    ("CMYK full cyan", lambda: Image.new("CMYK", (8, 8), (255, 0, 0, 0)), [0, 255, 255]),
    ("16-bit grey is scaled, not clipped", lambda: Image.new("I;16", (8, 8), 32896), [128, 128, 128]),
    ("16-bit white is white", lambda: Image.new("I;16", (8, 8), 65535), [255, 255, 255]),
    ("32-bit grey uses the 16-bit range", lambda: Image.new("I", (8, 8), 65535), [255, 255, 255]),
    ("grey is replicated", lambda: Image.new("L", (8, 8), 77), [77, 77, 77]),
    ("1-bit", lambda: Image.new("1", (8, 8), 1), [255, 255, 255]),
])
def test_every_mode_becomes_rgb_by_the_documented_rule(tmp_path, name, make, rgb):
    img = make()
    path = tmp_path / ("x.gif" if img.mode == "P" else "x.tif" if img.mode in ("CMYK", "I", "I;16") else "x.png")
    save(path, img, **({"transparency": 3} if img.mode == "P" else {}))
    assert pixel(path) == rgb


def test_an_animation_gives_its_first_frame(tmp_path):
    black, white = Image.new("L", (8, 8), 0), Image.new("L", (8, 8), 255)
    black.save(tmp_path / "a.gif", save_all=True, append_images=[white])
    assert pixel(tmp_path / "a.gif") == [0, 0, 0]


def test_a_wide_image_is_centre_cropped_not_squashed(tmp_path):
    img = Image.new("RGB", (90, 30), (255, 0, 0))
    img.paste((0, 0, 255), (30, 0, 60, 30))  # blue centre square between red sides
    arr, _ = read_image(save(tmp_path / "wide.png", img), 8)
    assert arr.shape == (3, 8, 8) and (arr[2] == 255).all() and (arr[0] == 0).all()


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 20, 20))  # white left half
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to view": the white half ends up on top
    path = save(tmp_path / "rot.jpg", img, exif=exif, quality=95)
    from PIL import ImageOps
    upright = ImageOps.exif_transpose(Image.open(path))
    assert upright.size == (20, 40)
    arr, _ = read_image(path, 20)  # the centre square of the upright image: the white half's lower part
    ref = np.asarray(upright.convert("RGB").crop((0, 10, 20, 30))).transpose(2, 0, 1)
    assert np.abs(arr.astype(int) - ref).mean() < 12


def refusal(root, **kw):
    with pytest.raises(DataError) as e:
        load(DataConfig(f"imagefolder:{root}", **kw))
    with pytest.raises(FolderError) as f:
        scan(root)
    assert str(e.value) == str(f.value)
    return str(e.value)


def test_refusals_name_the_folder_and_the_problem(tmp_path):
    one = tmp_path / "one"
    for i in range(5):
        save(one / "cat" / f"{i}.png", noise(8, 8, i))
    save(one / "dog" / "only.png", noise(8, 8, 200))
    assert f"class folder '{one / 'dog'}' has 1 usable image(s); each class needs at least 3" in refusal(one)

    flat = tmp_path / "flat"
    for i in range(4):
        save(flat / f"{i}.png", noise(8, 8, i))
    assert f"image folder '{flat}' has no class folders; its 4 file(s) sit directly in it" in refusal(flat)

    junk = tmp_path / "junk"
    for c in ("a", "b"):
        (junk / c).mkdir(parents=True)
        (junk / c / "x.jpg").write_text("not an image")
        (junk / c / "y.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    msg = refusal(junk)
    assert "has 0 class folder(s) with usable images (none); a classifier needs at least 2" in msg
    assert msg.endswith("Skipped: 4 not an image, 2 no usable image"), msg  # everything unreadable: said so, counted

    assert "does not exist" in refusal(tmp_path / "nowhere")


def test_train_and_test_folders_must_share_their_classes(tmp_path):
    for split, n in (("train", 4), ("test", 2)):
        for c in ("cat", "dog"):
            for i in range(n):
                save(tmp_path / split / c / f"{i}.png", noise(8, 8, 30 if c == "cat" else 200))
    (tmp_path / "notes.txt").write_text("split made by hand")
    d = load(DataConfig(f"imagefolder:{tmp_path}", resolution=8))
    assert d.classes == ["cat", "dog"] and len(d.y_test) == 4 and len(d.y_train) + len(d.y_val) == 8
    assert d.skipped == [("notes.txt", "outside train/ and test/")]
    save(tmp_path / "test" / "owl" / "0.png", noise(8, 8, 100))
    assert "only in test: owl" in refusal(tmp_path)


def png_header_only(path, w, h):
    """A PNG that declares w x h pixels and holds none: what a decompression bomb looks like to a reader."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
                     + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("w, h, reason", [
    (9000, 5000, "too large: 9000x5000 = 45 MP > 40 MP (not decoded)"),  # over our limit, under Pillow's
    (20000, 10000, "too large: over Pillow's decompression-bomb limit of 179 MP (not decoded)"),  # Pillow refuses to open it
])
def test_a_decompression_bomb_is_skipped_before_decoding(tmp_path, w, h, reason):
    assert read_image(png_header_only(tmp_path / "bomb.png", w, h), 16) == (None, reason)


def test_a_run_on_a_messy_folder_tells_the_user_what_it_skipped(tmp_path):
    """The CLI names the count and the first few skipped files with their reasons; the run directory keeps
    every one of them (data_report.json, which the app's run pages show)."""
    import json
    import subprocess
    import sys

    from mgr.runstore import Run
    root = messy(tmp_path / "photos")
    r = subprocess.run([sys.executable, "-m", "mgr", "train", "--dataset", f"imagefolder:{root}", "--resolution", "16",
                        "--method", "base", "--steps", "2", "--eval-every", "2", "--batch-size", "4",
                        "--probes-per-class", "1", "--probe-real", "8", "--device", "cpu", "--quiet",
                        "--runs-dir", str(tmp_path / "runs")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    run = Run(r.stdout.splitlines()[0])
    assert f"warning: 16 file(s) of imagefolder:{root.resolve()} skipped" in r.stderr
    named = [line.strip() for line in r.stderr.splitlines() if line.startswith("  ") and not line.startswith("  ...")]
    assert len(named) == 5 and all(EXPECTED_SKIPS[n.split(": ", 1)[0]] in n for n in named)
    assert f"... and 11 more; all of them with their reasons in {run.path / 'data_report.json'}" in r.stderr
    report = json.loads((run.path / "data_report.json").read_text())
    assert {f["path"]: f["reason"] for f in report["skipped"]}.keys() == EXPECTED_SKIPS.keys()
    assert all(f["reason"].startswith(EXPECTED_SKIPS[f["path"]]) for f in report["skipped"])
    assert run.data_report() == report and report["summary"].startswith("skipped 16 (")
