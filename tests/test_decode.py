"""The decode step: every kind of bad input is rejected with a reason; odd but valid images decode."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, features

from selfiescope.core.app import App
from selfiescope.core.events import Reject
from selfiescope.core.manifest import Manifest
from selfiescope.core.settings import ScrapePipeline, settings_from_dict
from selfiescope.pipelines.collecting.collect import collect
from selfiescope.plugins.decode import DecodeOptions, decode_image


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def photo(w: int = 200, h: int = 160, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (h // 20 + 1, w // 20 + 1, 3), dtype=np.uint8)
    return Image.fromarray(base).resize((w, h), Image.BILINEAR)


def png_with_header_size(width: int, height: int) -> bytes:
    """A tiny valid PNG whose IHDR claims ``width`` x ``height`` (a decompression bomb's header)."""
    data = bytearray(encode(Image.new("L", (8, 8)), "PNG"))
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    return bytes(data)


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (100, 100), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)


BAD = {
    "empty.jpg": (b"", "empty"),
    "page.jpg": (b"<!DOCTYPE html><html><body>Please log in</body></html>", "not_image"),
    "api.jpg": (b'{"status": "fail", "message": "rate limited"}', "not_image"),
    "truncated.jpg": (encode(photo(seed=1), "JPEG")[:1500], "truncated"),
    "truncated.png": (encode(photo(seed=2), "PNG")[:2000], "truncated"),
    "bomb.png": (png_with_header_size(30000, 30000), "too_many_pixels"),
    "tiny.png": (encode(photo(40, 30), "PNG"), "too_small"),
    "cut-header.gif": (encode(photo(), "GIF")[:200], "corrupt"),
    "noise.jpg": (bytes(range(256)) * 8, "not_image"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_input_is_rejected_with_its_code(name: str) -> None:
    data, code = BAD[name]
    with pytest.raises(Reject) as info:
        decode_image(data, DecodeOptions())
    assert info.value.code == code
    assert info.value.reason  # a human-readable reason, not just the code


def test_html_reason_says_what_came_instead() -> None:
    with pytest.raises(Reject, match="HTML"):
        decode_image(BAD["page.jpg"][0])
    with pytest.raises(Reject, match="JSON"):
        decode_image(BAD["api.jpg"][0])


def test_pixel_limit_is_configurable_and_checked_from_the_header() -> None:
    data = png_with_header_size(3000, 3000)  # 9 Mpx claimed, 64 px of real data
    with pytest.raises(Reject) as info:
        decode_image(data, DecodeOptions(max_pixels=4_000_000))
    assert info.value.code == "too_many_pixels" and "3000x3000" in info.value.reason
    # under the limit the header passes and the missing data shows as a broken file, not a crash
    with pytest.raises(Reject) as info:
        decode_image(data, DecodeOptions(max_pixels=10_000_000))
    assert info.value.code in {"truncated", "corrupt"}


def test_min_side_is_configurable() -> None:
    data = encode(photo(120, 90), "PNG")
    assert decode_image(data, DecodeOptions(min_side=64)).width == 120
    with pytest.raises(Reject, match="min_side 100"):
        decode_image(data, DecodeOptions(min_side=100))


def test_animated_gif_first_frame_or_reject() -> None:
    data = animated_gif()
    decoded = decode_image(data, DecodeOptions(animated="first_frame"))
    assert decoded.frames == 3
    assert tuple(decoded.image[50, 50]) == (255, 0, 0)
    with pytest.raises(Reject) as info:
        decode_image(data, DecodeOptions(animated="reject"))
    assert info.value.code == "animated"


def test_cmyk_jpeg_becomes_rgb() -> None:
    data = encode(Image.new("CMYK", (100, 100), (0, 255, 255, 0)), "JPEG")  # red in CMYK
    decoded = decode_image(data)
    assert decoded.image.shape == (100, 100, 3) and decoded.image.dtype == np.uint8
    r, g, b = decoded.image[50, 50].astype(int)
    assert r > 200 and g < 60 and b < 60


def test_16_bit_grey_png_is_scaled_not_clipped() -> None:
    ramp = np.tile(np.linspace(0, 65535, 128).astype(np.uint16), (96, 1))
    data = encode(Image.fromarray(ramp), "PNG")
    decoded = decode_image(data)
    assert decoded.image.shape == (96, 128, 3)
    row = decoded.image[10, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255 and 100 < row[64] < 155  # mid-grey stays mid-grey


def test_png_alpha_is_flattened_on_white_and_grey_becomes_rgb() -> None:
    rgba = Image.new("RGBA", (100, 100), (0, 0, 0, 0))
    rgba.paste((0, 0, 255, 255), (0, 0, 50, 100))
    decoded = decode_image(encode(rgba, "PNG"))
    assert tuple(decoded.image[50, 25]) == (0, 0, 255)
    assert tuple(decoded.image[50, 75]) == (255, 255, 255)
    grey = decode_image(encode(Image.new("L", (100, 80), 77), "PNG"))
    assert grey.image.shape == (80, 100, 3) and tuple(grey.image[0, 0]) == (77, 77, 77)


def test_exif_orientation_is_applied() -> None:
    im = Image.new("RGB", (200, 100), (255, 0, 0))
    im.paste((0, 0, 255), (100, 0, 200, 100))  # left red, right blue as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    decoded = decode_image(encode(im, "JPEG", exif=exif.tobytes(), quality=95))
    assert (decoded.width, decoded.height) == (100, 200)
    top, bottom = decoded.image[20, 50].astype(int), decoded.image[180, 50].astype(int)
    assert top[0] > 200 and top[2] < 60  # red on top after the rotation
    assert bottom[2] > 200 and bottom[0] < 60


@pytest.mark.parametrize("fmt", ["WEBP", "AVIF"])
def test_webp_and_avif_decode_where_pillow_reads_them(fmt: str) -> None:
    if not features.check(fmt.lower()):
        pytest.skip(f"this Pillow build cannot read {fmt}")
    decoded = decode_image(encode(photo(160, 120), fmt))
    assert decoded.format == fmt.lower() and decoded.image.shape == (120, 160, 3)


def test_unsupported_format_is_named() -> None:
    data = encode(photo(100, 100), "ICO")
    with pytest.raises(Reject) as info:
        decode_image(data)
    assert info.value.code == "unsupported" and "ICO" in info.value.reason


async def test_chain_rejects_every_bad_file_and_keeps_the_good_ones(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for name, (data, _) in BAD.items():
        (folder / name).write_bytes(data)
    (folder / "anim.gif").write_bytes(animated_gif())
    good = {"good.jpg": encode(photo(seed=5), "JPEG"), "good16.png": encode(Image.fromarray(
        np.tile(np.linspace(0, 65535, 128).astype(np.uint16), (96, 1))), "PNG"), "good.webp": encode(photo(seed=6), "WEBP")}
    for name, data in good.items():
        (folder / name).write_bytes(data)
    settings = settings_from_dict({
        "storage": {"root": str(tmp_path / "data")},
        "plugins": {"decode": {"animated": "reject"}},
    })
    pipeline = ScrapePipeline(kind="import", source="folder", paths=[folder], label="selfie", chain=["decode", "store"])
    stats = await collect(App.create(settings), "import", pipeline=pipeline)
    assert stats.status == "finished"
    assert stats.accepted == len(good)
    manifest = Manifest.at_root(tmp_path / "data")
    try:
        rows = manifest.query("SELECT origin_path, decision, reject_code, reason, location FROM images")
        by_name = {Path(r["origin_path"]).name: r for r in rows}
        expected = {name: code for name, (_, code) in BAD.items()} | {"anim.gif": "animated"}
        for name, code in expected.items():
            assert by_name[name]["decision"] == "rejected", name
            assert by_name[name]["reject_code"] == code, (name, by_name[name]["reason"])
        for name, data in good.items():
            assert by_name[name]["decision"] == "accepted"
            stored = tmp_path / "data" / by_name[name]["location"]
            assert stored.read_bytes() == data  # original bytes kept, not re-encoded
    finally:
        manifest.close()


def test_oversize_file_from_the_source_is_rejected_with_its_size() -> None:
    from selfiescope.core.events import ImageEvent, Origin
    from selfiescope.plugins.decode import DecodeStep

    ev = ImageEvent(origin=Origin("folder"), label="selfie", data=b"")
    ev.notes["oversize"] = 80_000_000
    with pytest.raises(Reject) as info:
        DecodeStep(DecodeOptions(), run=None).process(ev)  # type: ignore[arg-type]
    assert info.value.code == "too_large" and "80,000,000" in info.value.reason


def test_a_picture_over_the_decoders_own_ceiling_is_refused_in_our_words() -> None:
    """Pillow refuses some headers outright (a decompression bomb); the reason names the
    setting and its value, never Pillow's text, whose limit is not the one the user set."""
    from pydantic import ValidationError

    with pytest.raises(Reject) as info:
        decode_image(png_with_header_size(20000, 20000), DecodeOptions())
    assert info.value.code == "too_many_pixels" and "max_pixels 50,000,000" in info.value.reason
    assert "DOS" not in info.value.reason and "exceeds limit" not in info.value.reason
    with pytest.raises(ValidationError):  # no setting can promise more than the decoder accepts
        DecodeOptions(max_pixels=10**9)
