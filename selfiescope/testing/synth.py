"""Synthetic selfie / portrait / no-face photos for tests, demos and the mock site.

Everything is rendered at run time from scikit-image's ``astronaut`` photo (public
domain, shipped inside the package), so nothing is downloaded. The two face classes
differ only in *geometry*, the way real selfies differ from portraits:

- selfie: close, wide-angle (barrel + perspective) distortion, off-centre, tilted,
  head cut by the frame edge, largest face box ~30-55 % of the frame;
- portrait: farther, centred, level, undistorted, face box ~17-28 % of the frame;
- small face: the whole person far away, face box well under 10 %;
- no face: crops of the photo that hold no face, or abstract scenes.

Background, colour, brightness, noise and aspect ratio are drawn from the *same*
distributions for every class, so a classifier cannot win on them. Each function
takes a ``numpy.random.Generator`` (renderings are reproducible from a seed) and a
size (``int`` for a square, or ``(width, height)``) and returns RGB ``uint8``.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable

import cv2
import numpy as np

Size = int | tuple[int, int]

# Where OpenCV's Haar frontal-face cascade finds the face in astronaut() (x, y, w, h).
FACE_BOX = (177.0, 66.0, 95.0, 95.0)
FACE_CENTRE = (FACE_BOX[0] + FACE_BOX[2] / 2, FACE_BOX[1] + FACE_BOX[3] / 2)
FACE_SIDE = FACE_BOX[2]
# Regions of astronaut() that hold no face (x0, y0, x1, y1), for no-face crops.
_NOFACE_REGIONS = ((0, 0, 110, 512), (350, 0, 512, 300), (20, 290, 280, 512))  # not the helmet: its visor reflects a face

KINDS = ("selfie", "portrait", "small_face", "noface")


@functools.lru_cache(maxsize=1)
def astronaut() -> np.ndarray:
    from skimage import data

    img = data.astronaut()
    img.setflags(write=False)
    return img


@functools.lru_cache(maxsize=1)
def _person_mask() -> np.ndarray:
    """Soft mask (float32, 0..1) of the astronaut's head and body in the source photo."""
    mask = np.zeros((512, 512), np.uint8)
    cv2.ellipse(mask, (226, 100), (80, 92), 0, 0, 360, 255, -1)
    body = np.array([(112, 160), (308, 160), (362, 300), (372, 512), (18, 512), (28, 300)], np.int32)
    cv2.fillPoly(mask, [body], 255)
    soft = cv2.GaussianBlur(mask, (0, 0), 6).astype(np.float32) / 255.0
    soft.setflags(write=False)
    return soft


def _wh(size: Size) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    w, h = size
    return int(w), int(h)


def _background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A random studio/room-like background: a two-colour gradient with blurred blobs."""
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    angle = rng.uniform(0, np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = (xx / max(w, 1)) * np.cos(angle) + (yy / max(h, 1)) * np.sin(angle)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    bg = c0[None, None, :] * (1 - t[..., None]) + c1[None, None, :] * t[..., None]
    small = np.zeros((max(h // 8, 2), max(w // 8, 2), 3), np.float32)
    for _ in range(int(rng.integers(2, 7))):
        centre = (int(rng.integers(0, small.shape[1])), int(rng.integers(0, small.shape[0])))
        radius = int(rng.integers(1, max(min(small.shape[:2]) // 3, 2)))
        cv2.circle(small, centre, radius, rng.uniform(-90, 90, 3).tolist(), -1)
    blobs = cv2.resize(cv2.GaussianBlur(small, (0, 0), 2), (w, h), interpolation=cv2.INTER_LINEAR)
    # Large, contrasting shapes (windows, doors, furniture): every scene differs in the
    # low frequencies a perceptual hash looks at, so renderings are not near-duplicates.
    shapes = np.zeros((h, w, 3), np.float32)
    for _ in range(int(rng.integers(2, 6))):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        x1, y1 = x0 + int(rng.integers(w // 6, w // 2)), y0 + int(rng.integers(h // 6, h // 1))
        cv2.rectangle(shapes, (x0, y0), (x1, y1), rng.uniform(-120, 120, 3).tolist(), -1)
    shapes = cv2.GaussianBlur(shapes, (0, 0), max(w, h) / 200)
    return np.clip(bg + blobs + shapes, 0, 255).astype(np.float32)


def _style(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Photographic variation shared by all classes: exposure, white balance, noise."""
    gains = rng.uniform(0.65, 1.25) * rng.uniform(0.85, 1.15, 3)  # exposure x white balance
    out = np.clip(img.astype(np.float32) * gains.astype(np.float32), 0, 255).astype(np.uint8)
    gamma = rng.uniform(0.8, 1.25)
    lut = np.clip(255.0 * (np.arange(256) / 255.0) ** gamma, 0, 255).astype(np.uint8)
    out = cv2.LUT(out, lut)
    if rng.random() < 0.1:  # black and white
        out = cv2.cvtColor(cv2.cvtColor(out, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    sigma = rng.uniform(0, 8)
    if sigma > 0.5:
        noise = rng.standard_normal(out.shape, dtype=np.float32) * np.float32(sigma)
        out = np.clip(out + noise, 0, 255).astype(np.uint8)
    return out


def _remap(
    rng: np.random.Generator,
    w: int,
    h: int,
    *,
    scale: float,
    centre_src: tuple[float, float],
    centre_out: tuple[float, float],
    angle_deg: float,
    barrel: float = 0.0,
    keystone: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Sampling maps from output pixels to astronaut() pixels.

    ``scale`` is source pixels per output pixel; the point ``centre_src`` of the photo
    lands on ``centre_out`` (output pixels) and the photo turns by ``angle_deg``.
    ``barrel`` bends straight lines outwards like a phone's wide-angle lens;
    ``keystone`` tilts the image plane as when the camera is held low, at arm's length.
    """
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    half = max(w, h) / 2.0
    u, v = (xx - w / 2.0) / half, (yy - h / 2.0) / half
    if barrel:
        r2 = u * u + v * v
        factor = 1.0 + barrel * r2
        u, v = u * factor, v * factor
    if keystone:
        denom = 1.0 + keystone * v
        u, v = u / denom, v / denom
    px, py = u * half + w / 2.0 - centre_out[0], v * half + h / 2.0 - centre_out[1]
    a = np.deg2rad(angle_deg)
    cos, sin = np.cos(a), np.sin(a)
    map_x = (cos * px - sin * py) * scale + centre_src[0]
    map_y = (sin * px + cos * py) * scale + centre_src[1]
    return map_x.astype(np.float32), map_y.astype(np.float32)


def _compose(
    rng: np.random.Generator, w: int, h: int, maps: tuple[np.ndarray, np.ndarray], keep_background: float = 0.05
) -> np.ndarray:
    """Sample the photo through ``maps``; swap its background for a random one most times."""
    src = astronaut()
    map_x, map_y = maps
    photo = cv2.remap(src, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    inside = cv2.remap(
        np.ones(src.shape[:2], np.float32), map_x, map_y, cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT, borderValue=0,
    )
    mirror = rng.random() < 0.5  # people face either way; also halves hash collisions
    if rng.random() < keep_background and inside.min() > 0.99:
        out = photo
    else:
        person = cv2.remap(_person_mask(), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        alpha = (person * inside)[..., None]
        lighting = np.float32(rng.uniform(0.55, 1.2))  # the subject lit differently from the scene
        out = photo.astype(np.float32) * lighting * alpha + _background(rng, w, h) * (1 - alpha)
    return _style(rng, np.ascontiguousarray(out[:, ::-1]) if mirror else out)


def _frame_scale(w: int, h: int, fraction: float) -> float:
    """Source pixels per output pixel so that the face box covers ``fraction`` of the frame."""
    return FACE_SIDE / np.sqrt(fraction * w * h)


def render_selfie(rng: np.random.Generator, size: Size = 640) -> np.ndarray:
    """Close, wide-angle, off-centre, tilted; face box ~22-55 % of the frame."""
    w, h = _wh(size)
    fraction = rng.uniform(0.30, 0.54)
    scale = _frame_scale(w, h, fraction)
    face_out = FACE_SIDE / scale
    slack_x, slack_y = max((w - face_out) / 2 * 0.7, 0), max((h - face_out) / 2 * 0.7, 0)
    centre_out = (w / 2 + rng.uniform(-1, 1) * slack_x, h / 2 + rng.uniform(-1, 1) * slack_y)
    angle = rng.choice([-1, 1]) * rng.uniform(4, 13)
    maps = _remap(
        rng, w, h, scale=scale, centre_src=FACE_CENTRE, centre_out=centre_out, angle_deg=angle,
        barrel=rng.uniform(0.12, 0.3), keystone=rng.uniform(-0.15, 0.05),
    )
    return _compose(rng, w, h, maps)


def render_portrait(rng: np.random.Generator, size: Size = 640) -> np.ndarray:
    """Farther, centred, level, no lens distortion; face box ~17-35 % of the frame."""
    w, h = _wh(size)
    fraction = rng.uniform(0.19, 0.32)
    scale = _frame_scale(w, h, fraction)
    centre_out = (w / 2 + rng.uniform(-0.05, 0.05) * w, h * rng.uniform(0.38, 0.48))
    maps = _remap(
        rng, w, h, scale=scale, centre_src=FACE_CENTRE, centre_out=centre_out, angle_deg=rng.uniform(-2.5, 2.5)
    )
    return _compose(rng, w, h, maps)


def render_small_face(rng: np.random.Generator, size: Size = 640) -> np.ndarray:
    """The person far away; the face box covers well under 10 % of the frame."""
    w, h = _wh(size)
    fraction = rng.uniform(0.01, 0.05)
    scale = _frame_scale(w, h, fraction)
    face_out = FACE_SIDE / scale
    below = (astronaut().shape[0] - FACE_CENTRE[1]) / scale  # photo height under the face centre
    low = max(face_out, h - 0.95 * below)  # the body reaches the bottom edge: nobody floats
    centre_out = (rng.uniform(face_out, w - face_out), rng.uniform(low, max(low, h * 0.6)))
    maps = _remap(
        rng, w, h, scale=scale, centre_src=FACE_CENTRE, centre_out=centre_out, angle_deg=rng.uniform(-5, 5)
    )
    return _compose(rng, w, h, maps, keep_background=0.0)


def render_noface(rng: np.random.Generator, size: Size = 640) -> np.ndarray:
    """A crop of the photo away from the face (flag, shuttle, suit) or an abstract scene.

    A rare crop where the Haar cascade still sees a "face" in some texture is drawn
    again, so no-face ground truth really holds no detectable face.
    """
    for _ in range(8):
        image = _noface_once(rng, _wh(size))
        if largest_face_fraction(image) is None:
            return image
    return _style(rng, _background(rng, *_wh(size)))


def _noface_once(rng: np.random.Generator, wh: tuple[int, int]) -> np.ndarray:
    w, h = wh
    if rng.random() < 0.35:
        img = _background(rng, w, h)
        for _ in range(int(rng.integers(3, 9))):
            x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
            x1, y1 = x0 + int(rng.integers(w // 10, w // 2)), y0 + int(rng.integers(h // 10, h // 2))
            cv2.rectangle(img, (x0, y0), (x1, y1), rng.uniform(0, 255, 3).tolist(), -1)
        return _style(rng, img)
    x0, y0, x1, y1 = _NOFACE_REGIONS[int(rng.integers(0, len(_NOFACE_REGIONS)))]
    side = rng.uniform(0.5, 1.0) * min(x1 - x0, y1 - y0)
    scale = side / max(w, h)
    cx = rng.uniform(x0 + side / 2, max(x1 - side / 2, x0 + side / 2 + 1))
    cy = rng.uniform(y0 + side / 2, max(y1 - side / 2, y0 + side / 2 + 1))
    maps = _remap(rng, w, h, scale=scale, centre_src=(cx, cy), centre_out=(w / 2, h / 2), angle_deg=rng.uniform(-10, 10))
    photo = cv2.remap(astronaut(), *maps, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    return _style(rng, photo)


RENDERERS: dict[str, Callable[[np.random.Generator, Size], np.ndarray]] = {
    "selfie": render_selfie,
    "portrait": render_portrait,
    "small_face": render_small_face,
    "noface": render_noface,
}


def render(kind: str, rng: np.random.Generator, size: Size = 640) -> np.ndarray:
    try:
        renderer = RENDERERS[kind]
    except KeyError:
        raise ValueError(f"unknown rendering kind {kind!r} (expected one of {', '.join(RENDERERS)})") from None
    return renderer(rng, size)


def encode_jpeg(image: np.ndarray, quality: int = 88) -> bytes:
    """RGB array -> JPEG bytes (Pillow)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def largest_face_fraction(image: np.ndarray) -> float | None:
    """Largest Haar frontal-face box / frame area (scaleFactor 1.1, minNeighbors 5), None if no face."""
    cascade = _cascade()
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    faces = cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5)
    if len(faces) == 0:
        return None
    return max(int(fw) * int(fh) for _, _, fw, fh in faces) / float(gray.shape[0] * gray.shape[1])


@functools.lru_cache(maxsize=1)
def _cascade() -> cv2.CascadeClassifier:
    return cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
