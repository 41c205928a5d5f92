"""Private helpers: lazy image IO through Pillow (atomic writes live in :mod:`cion_fast._io`)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


def outside_root(relative: np.ndarray) -> np.ndarray:
    """bool [n]: which of these dataset-relative paths (str array) would leave the dataset's
    root: absolute ones, and those whose ``..`` components climb above it. Lexical (symlinks
    inside a dataset are the user's), vectorised for the millions of paths of a tracklet index:
    only the paths that hold "/" at the start or ".." anywhere are normalised one by one.

    Example:
        >>> outside_root(np.array(["0001/a.jpg", "../x.jpg", "/etc/passwd", "a/../b.jpg", "a/../../b.jpg"])).tolist()
        [False, True, True, False, True]
    """
    relative = np.asarray(relative, dtype=str)
    suspect = np.flatnonzero(np.char.startswith(relative, "/") | (np.char.find(relative, "..") >= 0))
    out = np.zeros(relative.shape[0], dtype=bool)
    for i in suspect:
        path = str(relative[i])
        out[i] = os.path.isabs(path) or os.path.normpath(path).split(os.sep)[0] == ".."
    return out


def pil():
    """The Pillow ``Image`` module, imported on first use with a clear error when missing."""
    try:
        from PIL import Image
    except ImportError as err:  # pragma: no cover - Pillow is a declared dependency
        raise ImportError("reading and writing image files needs Pillow: pip install pillow") from err
    return Image


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Reads an image file as uint8 [H, W, 3] RGB.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a readable image, or has more pixels than Pillow's
            decompression-bomb limit ``PIL.Image.MAX_IMAGE_PIXELS`` (naming the file).

    Example:
        >>> import numpy as np, tempfile, os
        >>> from cion_fast.data import read_image, write_image
        >>> path = os.path.join(tempfile.mkdtemp(), "x.png")
        >>> img = np.random.default_rng(0).integers(0, 256, (8, 4, 3), dtype=np.uint8)
        >>> write_image(path, img)
        >>> bool((read_image(path) == img).all())
        True
    """
    image_mod = pil()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file {path} does not exist")
    limit = image_mod.MAX_IMAGE_PIXELS
    try:
        with image_mod.open(path) as im:
            # Pillow refuses a header of over twice its limit, but above the limit only warns and
            # decodes: an image that large is no person crop, refuse it too.
            if limit and im.width * im.height > limit:
                raise image_mod.DecompressionBombError(f"{im.width}x{im.height} pixels")
            if im.mode.startswith("I"):  # 16-bit (or 32-bit int) grey: PIL's convert would clip at 255
                return _scaled_grey(np.asarray(im))
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except (image_mod.DecompressionBombError, image_mod.DecompressionBombWarning) as err:
        raise ValueError(f"image {path} is larger than Pillow's decompression-bomb limit of {limit} pixels "
                         f"(PIL.Image.MAX_IMAGE_PIXELS; raise it for a trusted file): {err}") from err
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"cannot read image {path}: {err}") from err


def _scaled_grey(values: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] from integer grey levels of 16 bits (PIL modes I;16*, and I for 16-bit
    PNGs), scaled 65535 -> 255 with rounding; levels above 16 bits are clipped."""
    grey = np.clip(values.astype(np.int64), 0, 65535)
    scaled = ((grey * 255 + 32767) // 65535).astype(np.uint8)
    return np.repeat(scaled[:, :, None], 3, axis=2)


def read_images(paths: list, hint: str = "resize them first", size: tuple[int, int] | None = None,
                resize_all: bool = False) -> np.ndarray:
    """Reads image files into uint8 [k, H, W, 3]. Images of different sizes (real DukeMTMC, CUHK03,
    MSMT17 crops) are a ValueError with ``hint`` unless ``size=(H, W)`` is given: then every image
    not of that size is resized to it (PIL bilinear, which antialiases when shrinking); a set of one
    size is returned as read, unless ``resize_all`` (then the result is always [k, *size, 3]).

    Example:
        >>> import numpy as np, tempfile, os
        >>> from cion_fast.data import read_images, write_image
        >>> folder = tempfile.mkdtemp()
        >>> for name, shape in (("a.png", (8, 4, 3)), ("b.png", (6, 4, 3))):
        ...     write_image(os.path.join(folder, name), np.zeros(shape, np.uint8))
        >>> paths = [os.path.join(folder, name) for name in ("a.png", "b.png")]
        >>> read_images(paths, size=(8, 4)).shape
        (2, 8, 4, 3)
        >>> read_images(paths[:1], size=(4, 2), resize_all=True).shape
        (1, 4, 2, 3)
    """
    imgs = [read_image(p) for p in paths]
    shapes = sorted({im.shape for im in imgs})
    if len(shapes) > 1 or (resize_all and size is not None):
        if size is None:
            raise ValueError(f"images have different sizes {shapes[:4]}; {hint}")
        imgs = [im if im.shape[:2] == tuple(size) else resize_image(im, size) for im in imgs]
    return np.stack(imgs) if imgs else np.zeros((0, 0, 0, 3), np.uint8)


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 [H, W, 3] resized to uint8 [size[0], size[1], 3] (PIL bilinear, which antialiases when
    shrinking): the one resize of crops read from files or cut from frames.

    Example:
        >>> import numpy as np
        >>> resize_image(np.zeros((8, 4, 3), np.uint8), (4, 2)).shape
        (4, 2, 3)
    """
    image_mod = pil()
    return np.asarray(image_mod.fromarray(image).resize((size[1], size[0]), image_mod.BILINEAR))


def write_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Writes uint8 [H, W, 3] as PNG (lossless, when the name ends in .png) or JPEG (quality 95).

    Example:
        >>> import numpy as np, tempfile, os
        >>> from cion_fast.data import write_image
        >>> write_image(os.path.join(tempfile.mkdtemp(), "a.png"), np.zeros((4, 2, 3), np.uint8))
    """
    image_mod = pil()
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise TypeError(f"image must be uint8 [H, W, 3], got {image.dtype} {list(image.shape)}")
    path = Path(path)
    ext = path.suffix.lower()
    if ext == ".png":
        image_mod.fromarray(image).save(path, format="PNG", compress_level=1)
    elif ext in (".jpg", ".jpeg"):
        image_mod.fromarray(image).save(path, format="JPEG", quality=95)
    else:
        raise ValueError(f"image file name must end in .png, .jpg or .jpeg, got {path.name}")
