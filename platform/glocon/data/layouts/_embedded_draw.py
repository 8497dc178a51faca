"""The pixels of the embedded data set (``glocon.data.layouts.embedded``): a pure function of a
``Spec`` and an image index (not a layout itself).

Objects are drawn with hard edges onto backgrounds cut (random square crop, flip, scale)
from the natural photos that scikit-image ships inside its wheel (``skimage/data/*.png``);
the files are read directly, never through ``skimage.data`` functions, which may download.
Which shape and texture each class id is, and how the images are split and cached: see
``embedded``'s module doc.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from glocon.errors import DataError
from glocon.ops import IGNORE_INDEX

# Bump when the drawing code changes the pixels: old caches are then not reused.
GENERATOR_VERSION = 1
NUM_CLASSES = 20
VAL_STREAM = 1_000_003  # the val split's images come from random streams no train image uses
SHAPES = ("ellipse", "rectangle", "triangle", "star", "cross")
TEXTURES = ("stripes", "checker", "dots", "blotches")
# Hue (degrees) of each texture family; instances jitter it by +-20 degrees.
TEXTURE_HUES = (0.0, 120.0, 220.0, 50.0)

# Photos bundled in the scikit-image wheel (skimage/data/, "legacy" data next to _fetchers.py);
# the others (e.g. skimage.data.cells3d) are fetched with pooch and must not be used.
BACKGROUND_FILES = (
    "astronaut.png",
    "coffee.png",
    "chelsea.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "hubble_deep_field.jpg",
    "retina.jpg",
    "ihc.png",
    "camera.png",
    "coins.png",
    "grass.png",
    "gravel.png",
    "brick.png",
    "moon.png",
)
MIN_BACKGROUNDS = 4


def class_shape_texture(class_id: int) -> tuple[int, int]:
    """Class id 1..20 -> (shape index, texture index).

    k = class_id - 1 = 5 * fold + s: shape s, texture (fold + s) mod 4. For a fixed shape the
    four folds give four different textures, so the 20 pairs are all distinct.
    """
    if not 1 <= class_id <= NUM_CLASSES:
        raise DataError(f"embedded class id {class_id}: expected 1..{NUM_CLASSES}")
    fold, shape = divmod(class_id - 1, 5)
    return shape, (fold + shape) % len(TEXTURES)


# ----------------------------------------------------------------------------- spec


@dataclass(frozen=True)
class Spec:
    """Everything that determines the pixels (hashed into the cache folder name)."""

    n_images: int
    size: int
    seed: int
    objects_per_image: tuple[int, int]
    area_px: tuple[float, float]  # object area range in pixels, after the min_class_pixels floor
    ignore_border: int
    backgrounds: tuple[str, ...]
    version: int = GENERATOR_VERSION
    split: str = "train"

    def digest(self) -> str:
        fields = asdict(self)
        if fields["split"] == "train":
            del fields["split"]  # train data keeps the digest it had before splits existed
        blob = json.dumps(fields, sort_keys=True).encode("utf-8")
        return hashlib.sha256(blob).hexdigest()[:16]

    def stream(self, *index: int) -> list[int]:
        """The random stream of the class plan (no index) or of image ``index``, for this split."""
        return [self.seed, *([VAL_STREAM] if self.split == "val" else []), *index]


# ----------------------------------------------------------------------------- backgrounds


def skimage_data_dir() -> Path:
    import skimage  # the package folder only; skimage.data's loaders may download

    return Path(skimage.__file__).parent / "data"


@functools.lru_cache(maxsize=1)
def _backgrounds() -> tuple[tuple[str, np.ndarray], ...]:
    """The bundled photos that exist in this install, as RGB uint8 arrays (grayscale stacked)."""
    folder = skimage_data_dir()
    out = []
    for name in BACKGROUND_FILES:
        path = folder / name
        if not path.is_file():
            continue
        with Image.open(path) as img:
            out.append((name, np.asarray(img.convert("RGB"))))
    if len(out) < MIN_BACKGROUNDS:
        raise DataError(
            f"embedded layout: found {len(out)} of the photos {list(BACKGROUND_FILES)} in {folder}; "
            f"expected at least {MIN_BACKGROUNDS} (is scikit-image installed from its wheel?)"
        )
    return tuple(out)


def background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random square crop (45-100% of the short side), maybe flipped, resized to (size, size, 3)."""
    photos = _backgrounds()
    _, photo = photos[int(rng.integers(len(photos)))]
    h, w = photo.shape[:2]
    side = int(round(min(h, w) * rng.uniform(0.45, 1.0)))
    y0 = int(rng.integers(h - side + 1))
    x0 = int(rng.integers(w - side + 1))
    crop = photo[y0 : y0 + side, x0 : x0 + side]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    out = Image.fromarray(np.ascontiguousarray(crop)).resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(out).copy()


# ----------------------------------------------------------------------------- objects

# Area of each shape at circumradius 1 and aspect 1 (closed forms of the polygons below).
_STAR_RADII = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)  # outer tips and inner corners, alternating
_STAR = np.stack([_STAR_RADII * np.sin(np.pi * np.arange(10) / 5), -_STAR_RADII * np.cos(np.pi * np.arange(10) / 5)], axis=1)
_TRIANGLE = np.array([(np.sin(a), -np.cos(a)) for a in (0.0, 2 * np.pi / 3, 4 * np.pi / 3)])
_CROSS_HALF_WIDTH = 0.33
_RECT_HALF = 0.8
_UNIT_AREA = (
    np.pi,  # ellipse
    4 * _RECT_HALF**2,  # rectangle
    3 * np.sqrt(3) / 4,  # triangle
    5 * 1.0 * 0.45 * np.sin(np.pi / 5),  # star: 10 triangles of sides 1 and 0.45 at 36 degrees
    2 * (2 * 2 * _CROSS_HALF_WIDTH) - (2 * _CROSS_HALF_WIDTH) ** 2,  # cross: two bars minus overlap
)


@dataclass(frozen=True)
class EmbeddedObject:
    """One drawn object; all of its randomness, so drawing is a pure function of it."""

    class_id: int
    shape: int
    texture: int
    cy: float
    cx: float
    radius: float  # circumradius in px
    angle: float  # shape rotation, radians
    aspect: float  # minor/major axis scale in (0, 1]
    tex_angle: float
    period: float  # texture period in px
    phase: tuple[float, float]
    colors: tuple[tuple[int, int, int], tuple[int, int, int]]  # (pattern, ground)
    shade: tuple[float, float]  # linear lighting gradient across the object
    noise_seed: int


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    """h in degrees, s and v in [0, 1] -> RGB uint8 triple (standard HSV hexcone)."""
    c = v * s
    hp = (h % 360.0) / 60.0
    x = c * (1 - abs(hp % 2 - 1))
    r, g, b = [(c, x, 0), (x, c, 0), (0, c, x), (0, x, c), (x, 0, c), (c, 0, x)][int(hp) % 6]
    m = v - c
    return tuple(int(round(255 * (ch + m))) for ch in (r, g, b))  # type: ignore[return-value]


def sample_object(rng: np.random.Generator, class_id: int, size: int, area_px: tuple[float, float], others) -> EmbeddedObject:
    """Draw the parameters of one object; its centre avoids heavy overlap with ``others`` when it can."""
    shape, texture = class_shape_texture(class_id)
    aspect = float(rng.uniform(0.65, 1.0))
    target = float(rng.uniform(*area_px))
    radius = float(np.sqrt(target / (_UNIT_AREA[shape] * aspect)))
    margin = 0.6 * radius
    lo, hi = margin, max(margin, size - margin)
    cy = cx = 0.0
    for _ in range(25):  # rejection sampling: keep centres >= 0.8 x (r_i + r_j) apart if possible
        cy, cx = float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi))
        if all(np.hypot(cy - o.cy, cx - o.cx) >= 0.8 * (radius + o.radius) for o in others):
            break
    hue = TEXTURE_HUES[texture] + float(rng.uniform(-20, 20))
    pattern = _hsv_to_rgb(hue, float(rng.uniform(0.6, 1.0)), float(rng.uniform(0.8, 1.0)))
    ground = _hsv_to_rgb(hue + float(rng.uniform(-15, 15)), float(rng.uniform(0.3, 0.9)), float(rng.uniform(0.12, 0.4)))
    return EmbeddedObject(
        class_id=class_id,
        shape=shape,
        texture=texture,
        cy=cy,
        cx=cx,
        radius=radius,
        angle=float(rng.uniform(0, 2 * np.pi)),
        aspect=aspect,
        tex_angle=float(rng.uniform(0, np.pi)),
        period=max(3.0, radius * float(rng.uniform(0.22, 0.4))),
        phase=(float(rng.random()), float(rng.random())),
        colors=(pattern, ground),
        shade=(float(rng.uniform(-0.15, 0.15)), float(rng.uniform(-0.15, 0.15))),
        noise_seed=int(rng.integers(2**31)),
    )


def _inside_polygon(u: np.ndarray, v: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd rule, vectorised over points, one pass per edge."""
    inside = np.zeros(u.shape, dtype=bool)
    n = len(poly)
    for i in range(n):
        (x1, y1), (x2, y2) = poly[i], poly[(i + 1) % n]
        crosses = (y1 > v) != (y2 > v)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = x1 + (v - y1) * (x2 - x1) / (y2 - y1)
        inside ^= crosses & (u < x_at)
    return inside


def _shape_mask(shape: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Canonical unit-circumradius shapes, (u, v) in the object's normalised frame."""
    if shape == 0:
        return u * u + v * v <= 1.0
    if shape == 1:
        return (np.abs(u) <= _RECT_HALF) & (np.abs(v) <= _RECT_HALF)
    if shape == 2:
        return _inside_polygon(u, v, _TRIANGLE)
    if shape == 3:
        return _inside_polygon(u, v, _STAR)
    w = _CROSS_HALF_WIDTH
    return ((np.abs(u) <= 1) & (np.abs(v) <= w)) | ((np.abs(u) <= w) & (np.abs(v) <= 1))


def _pattern(obj: EmbeddedObject, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Texture on/off per pixel; (a, b) are pixel offsets in the texture's rotated frame."""
    p, (ph0, ph1) = obj.period, obj.phase
    if obj.texture == 0:  # stripes
        return (a / p + ph0) % 1.0 < 0.5
    if obj.texture == 1:  # checker
        return (np.floor(a / p + ph0) + np.floor(b / p + ph1)) % 2 == 0
    if obj.texture == 2:  # dots on a square lattice
        fa, fb = (a / p + ph0) % 1.0 - 0.5, (b / p + ph1) % 1.0 - 0.5
        return fa * fa + fb * fb < 0.3**2
    # blotches: uniform noise on a coarse grid, bilinearly upsampled, thresholded at its median
    noise_rng = np.random.default_rng(obj.noise_seed)
    cells = int(np.ceil(2 * obj.radius / p)) + 3
    grid = noise_rng.random((cells, cells))
    coords = np.stack([(a / p) + cells / 2.0, (b / p) + cells / 2.0])
    field = ndimage.map_coordinates(grid, coords.reshape(2, -1), order=1, mode="nearest").reshape(a.shape)
    return field > 0.5


def draw_object(obj: EmbeddedObject, size: int) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray] | None:
    """Rasterise one object in its bounding box. -> ((rows, cols), inside (h, w) bool, rgb (h, w, 3) uint8).

    None when the object lies entirely outside the image.
    """
    r = obj.radius
    y0, y1 = max(0, int(np.floor(obj.cy - r))), min(size, int(np.ceil(obj.cy + r)) + 1)
    x0, x1 = max(0, int(np.floor(obj.cx - r))), min(size, int(np.ceil(obj.cx + r)) + 1)
    if y0 >= y1 or x0 >= x1:
        return None
    # pixel centres relative to the object centre
    dy = (np.arange(y0, y1, dtype=np.float64) + 0.5 - obj.cy)[:, None]
    dx = (np.arange(x0, x1, dtype=np.float64) + 0.5 - obj.cx)[None, :]
    ca, sa = np.cos(obj.angle), np.sin(obj.angle)
    pu = ca * dx + sa * dy  # object frame, px
    pv = -sa * dx + ca * dy
    inside = _shape_mask(obj.shape, pu / r, pv / (r * obj.aspect))
    ct, st = np.cos(obj.tex_angle), np.sin(obj.tex_angle)
    on = _pattern(obj, ct * pu + st * pv, -st * pu + ct * pv)
    colors = np.asarray(obj.colors, dtype=np.float32)  # (2, 3)
    rgb = np.where(on[..., None], colors[0], colors[1])
    light = 1.0 + obj.shade[0] * (pu / r) + obj.shade[1] * (pv / r)  # soft lighting so objects are not flat
    rgb = np.clip(rgb * light[..., None].astype(np.float32), 0, 255).round().astype(np.uint8)
    return (slice(y0, y1), slice(x0, x1)), inside, rgb


# ----------------------------------------------------------------------------- images


@dataclass
class Rendered:
    """image (S, S, 3) uint8; mask (S, S) uint8; background (S, S, 3) uint8 before objects."""

    image: np.ndarray
    mask: np.ndarray
    background: np.ndarray
    objects: list[EmbeddedObject]


def plan_classes(spec: Spec) -> list[list[int]]:
    """Class ids per image, in drawing order. Balanced: a stream of shuffled 1..20 blocks is cut
    into images, so every class gets ~(total objects / 20) objects."""
    rng = np.random.default_rng(spec.stream() if spec.split != "train" else spec.seed)
    lo, hi = spec.objects_per_image
    counts = rng.integers(lo, hi + 1, size=spec.n_images)
    total = int(counts.sum())
    blocks = -(-total // NUM_CLASSES)
    stream = np.concatenate([rng.permutation(NUM_CLASSES) + 1 for _ in range(blocks)])[:total]
    cuts = np.cumsum(counts)[:-1]
    return [[int(c) for c in part] for part in np.split(stream, cuts)]


def border_ignore(mask: np.ndarray, width: int) -> np.ndarray:
    """Pixels within ``width`` of a label change -> IGNORE_INDEX (VOC-style border)."""
    if width <= 0:
        return mask
    window = 2 * width + 1
    changes = ndimage.maximum_filter(mask, size=window) != ndimage.minimum_filter(mask, size=window)
    out = mask.copy()
    out[changes] = IGNORE_INDEX
    return out


def render(index: int, spec: Spec, classes: list[int] | None = None) -> Rendered:
    """Image ``index`` of the data set, exactly as written to the cache."""
    if classes is None:
        classes = plan_classes(spec)[index]
    rng = np.random.default_rng(spec.stream(index))
    bg = background(rng, spec.size)
    image, mask = bg.copy(), np.zeros((spec.size, spec.size), dtype=np.uint8)
    objects: list[EmbeddedObject] = []
    for class_id in classes:
        obj = sample_object(rng, class_id, spec.size, spec.area_px, objects)
        objects.append(obj)
        drawn = draw_object(obj, spec.size)
        if drawn is None:
            continue
        box, inside, rgb = drawn
        image[box][inside] = rgb[inside]
        mask[box][inside] = class_id
    return Rendered(image=image, mask=border_ignore(mask, spec.ignore_border), background=bg, objects=objects)
