"""Synthetic shapes: a NumPy-only image generator for the bundled models.

Every image is an RGB picture of ``size`` x ``size`` pixels: a linear colour gradient
background, clutter (thin random line segments and small blobs in arbitrary colours), one
or more filled shapes on top, then Gaussian pixel noise. Six shape classes (see
:data:`CLASSES`): circle, square, triangle, cross, star (five-pointed) and ellipse, each
with a random size, position, rotation and colour.

Two tasks share the generator:

- :func:`make_classification` -- one shape per image, label ``0..5`` (index in
  :data:`CLASSES`).
- :func:`make_segmentation` -- one to three non-overlapping shapes per image, and a
  per-pixel mask: ``0`` is background (clutter included), ``1 + k`` is shape class ``k``.

Images are float32 ``(N, 3, H, W)`` normalised as ``(pixel - MEAN) / STD`` (pixels in
``[0, 1]`` map to ``[-1, 1]``); pass ``normalize=False`` for raw ``[0, 1]`` pixels
(pictures). Output depends only on ``(n, seed, size)`` and is identical across runs and
machines (NumPy's PCG64 ``default_rng``). The work is vectorised over chunks of images:
under 1 ms per 64 x 64 image on one core (4000 images in about 3 s).

This module imports only NumPy (``pyconv demo`` and the training scripts in the
repository's ``models/`` use it).
"""
import numpy as np

__all__ = ["CLASSES", "NUM_CLASSES", "MEAN", "STD", "normalize", "denormalize",
           "make_classification", "make_segmentation", "mean_iou"]

#: Shape class names; a classification label / (segmentation class - 1) indexes this.
CLASSES = ("circle", "square", "triangle", "cross", "star", "ellipse")
NUM_CLASSES = len(CLASSES)

#: Per-channel normalisation: ``x = (pixel - MEAN) / STD``.
MEAN = 0.5
STD = 0.5

_CHUNK = 512          # images per vectorised block (bounds temporary memory to ~100 MB)
_MAX_LINES = 3
_MAX_BLOBS = 4


def normalize(pixels):
    """Map raw pixels in ``[0, 1]`` to the models' input range.

    Parameters
    ----------
    pixels : ndarray, float
        Any shape.

    Returns
    -------
    ndarray, float32
        ``(pixels - MEAN) / STD``, same shape.
    """
    return ((np.asarray(pixels, dtype=np.float32) - MEAN) / STD).astype(np.float32)


def denormalize(x):
    """Inverse of :func:`normalize`, clipped to ``[0, 1]`` (for saving pictures)."""
    return np.clip(np.asarray(x, dtype=np.float32) * STD + MEAN, 0.0, 1.0)


# --------------------------------------------------------------------------- geometry

def _inside(kind, u, v, radius, aspect):
    """Boolean mask of the points ``(u, v)`` (shape-local, rotated frame) inside a shape.

    ``u, v``: (m, H, W) coordinates relative to the shape centre; ``radius``,
    ``aspect``: (m, 1, 1). Radii are scaled per class so that every class spans a similar
    extent and fits in a bounding circle of 1.2 ``radius`` (used for placement).
    """
    if kind == 0:                                       # circle
        return u * u + v * v <= radius * radius
    if kind == 1:                                       # square, half side 0.8 R
        h = 0.8 * radius
        return np.maximum(np.abs(u), np.abs(v)) <= h
    if kind == 2:                                       # equilateral triangle, circumradius 1.15 R
        r = 1.15 * radius
        ok = np.ones(u.shape, dtype=bool)
        for k in range(3):                              # three half-planes, inradius r/2
            a = np.pi / 3 + 2 * np.pi * k / 3
            ok &= u * np.cos(a) + v * np.sin(a) <= 0.5 * r
        return ok
    if kind == 3:                                       # cross (plus sign), arm half-width 0.3 R
        au, av, w = np.abs(u), np.abs(v), 0.3 * radius
        return ((au <= w) & (av <= radius)) | ((av <= w) & (au <= radius))
    if kind == 4:                                       # five-pointed star, straight edges
        tip, valley = 1.15 * radius, 0.5 * radius
        period = 2 * np.pi / 5
        frac = np.mod(np.arctan2(v, u), period) / period
        psi = np.minimum(frac, 1.0 - frac) * period     # angle from the nearest tip, [0, p/2]
        # Boundary radius along angle psi: the edge from tip (tip, 0) to the valley point.
        bx, by = valley * np.cos(period / 2), valley * np.sin(period / 2)
        edge = tip * by / (np.cos(psi) * by - np.sin(psi) * (bx - tip))
        return u * u + v * v <= edge * edge
    if kind == 5:                                       # ellipse, semi-axes 1.1 R, aspect x 1.1 R
        a = 1.1 * radius
        b = a * aspect
        return (u / a) ** 2 + (v / b) ** 2 <= 1.0
    raise ValueError(f"unknown shape kind {kind}")


def _local_coords(yy, xx, cy, cx, angle):
    """Rotate image coordinates into each shape's frame. Inputs broadcast to (m, H, W)."""
    dy, dx = yy - cy, xx - cx
    c, s = np.cos(angle), np.sin(angle)
    return c * dx + s * dy, -s * dx + c * dy


def _draw_shapes(img, label_map, kinds, cy, cx, radius, angle, aspect, colour, active):
    """Paint one shape per image of a chunk (in place), class by class.

    ``img``: (m, H, W, 3); ``label_map``: (m, H, W) int64 or None, gets ``kind + 1``
    under each shape; other arrays (m,). Only images with ``active`` set are painted.
    """
    size = img.shape[1]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5   # pixel centres
    for kind in range(NUM_CLASSES):
        idx = np.nonzero(active & (kinds == kind))[0]
        if idx.size == 0:
            continue
        f = [a[idx].astype(np.float32)[:, None, None] for a in (cy, cx, angle, radius, aspect)]
        u, v = _local_coords(yy, xx, f[0], f[1], f[2])
        inside = _inside(kind, u, v, f[3], f[4])
        img[idx] = np.where(inside[..., None], colour[idx][:, None, None, :], img[idx])
        if label_map is not None:
            label_map[idx] = np.where(inside, kind + 1, label_map[idx])


# --------------------------------------------------------------------------- scene

def _background_and_clutter(rng, m, size, dark):
    """Gradient background plus clutter for ``m`` images: (m, H, W, 3) float32 in [0, 1].

    ``dark`` (m,) bool: dark backgrounds (channels in [0, 0.4]) get bright shapes and
    the reverse, so every shape keeps at least 0.2 contrast per channel.
    """
    lo = np.where(dark, 0.0, 0.6)[:, None]
    c0 = lo + 0.4 * rng.random((m, 3))
    c1 = lo + 0.4 * rng.random((m, 3))
    theta = rng.uniform(0, 2 * np.pi, m).astype(np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / (size - 1)
    t = (np.cos(theta)[:, None, None] * (xx - 0.5) + np.sin(theta)[:, None, None] * (yy - 0.5))
    t = np.clip(t * np.float32(0.5 / 0.7071) + np.float32(0.5), 0, 1)[..., None]  # (m,H,W,1)
    c0, c1 = c0.astype(np.float32), c1.astype(np.float32)
    img = c0[:, None, None, :] * (1 - t) + c1[:, None, None, :] * t

    pix = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    py, px = pix[0], pix[1]
    f32 = np.float32
    # Thin line segments: pixels closer to the segment than its half-width.
    n_lines = rng.integers(0, _MAX_LINES + 1, m)
    p0 = rng.uniform(0, size, (m, _MAX_LINES, 2)).astype(f32)
    p1 = rng.uniform(0, size, (m, _MAX_LINES, 2)).astype(f32)
    width = rng.uniform(0.5, 1.0, (m, _MAX_LINES)).astype(f32)
    lcol = rng.random((m, _MAX_LINES, 3)).astype(f32)
    e = (slice(None), None, None)
    for j in range(_MAX_LINES):
        idx = np.nonzero(n_lines > j)[0]             # only the images that have line j
        ay, ax = p0[idx, j, 0][e], p0[idx, j, 1][e]
        dy, dx = p1[idx, j, 0][e] - ay, p1[idx, j, 1][e] - ax
        s = np.clip(((py - ay) * dy + (px - ax) * dx) / (dy * dy + dx * dx + f32(1e-6)), 0, 1)
        d2 = (py - ay - s * dy) ** 2 + (px - ax - s * dx) ** 2
        hit = d2 <= width[idx, j][e] ** 2
        img[idx] = np.where(hit[..., None], lcol[idx, j, None, None, :], img[idx])
    # Small round blobs, radius 1-3 px (well below the smallest shape).
    n_blobs = rng.integers(0, _MAX_BLOBS + 1, m)
    bc = rng.uniform(0, size, (m, _MAX_BLOBS, 2)).astype(f32)
    br = rng.uniform(1.0, 3.0, (m, _MAX_BLOBS)).astype(f32)
    bcol = rng.random((m, _MAX_BLOBS, 3)).astype(f32)
    for j in range(_MAX_BLOBS):
        idx = np.nonzero(n_blobs > j)[0]
        d2 = (py - bc[idx, j, 0][e]) ** 2 + (px - bc[idx, j, 1][e]) ** 2
        hit = d2 <= br[idx, j][e] ** 2
        img[idx] = np.where(hit[..., None], bcol[idx, j, None, None, :], img[idx])
    return img


def _shape_colours(rng, m, dark):
    """Shape colours contrasting with the background regime: (m, 3) float32."""
    return (np.where(dark, 0.6, 0.0)[:, None] + 0.4 * rng.random((m, 3))).astype(np.float32)


def _finish(rng, img, normalize_output):
    """Add per-image Gaussian noise, clip, go channels-first, normalise."""
    m = img.shape[0]
    sigma = rng.uniform(0.02, 0.08, m).astype(np.float32)[:, None, None, None]
    img = img + sigma * rng.standard_normal(img.shape, dtype=np.float32)
    img = np.clip(img, 0.0, 1.0).transpose(0, 3, 1, 2)
    img = np.ascontiguousarray(img, dtype=np.float32)
    return normalize(img) if normalize_output else img


def _check(n, size):
    if int(n) != n or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    if int(size) != size or size < 16:
        raise ValueError(f"size must be an integer >= 16, got {size!r}")
    return int(n), int(size)


# --------------------------------------------------------------------------- public API

def make_classification(n, seed, size=64, normalize=True):
    """Images with one shape each, and the shape's class.

    Parameters
    ----------
    n : int
        Number of images.
    seed : int
        Seed for ``numpy.random.default_rng``; the output depends only on
        ``(n, seed, size)``.
    size : int, optional
        Image height and width in pixels (>= 16), by default 64. Shape radii scale with it
        (about 0.16 to 0.31 of the side).
    normalize : bool, optional
        If True (default) return ``(pixel - MEAN) / STD``; else raw pixels in ``[0, 1]``.

    Returns
    -------
    images : ndarray, float32, shape (n, 3, size, size)
    labels : ndarray, int64, shape (n,)
        Class index in ``0 .. NUM_CLASSES - 1`` (see :data:`CLASSES`); classes are
        balanced (each appears ``n // NUM_CLASSES`` or one more times) in random order.
    """
    n, size = _check(n, size)
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % NUM_CLASSES).astype(np.int64)
    images = np.empty((n, 3, size, size), dtype=np.float32)
    for start in range(0, n, _CHUNK):
        m = min(_CHUNK, n - start)
        kinds = labels[start:start + m]
        dark = rng.random(m) < 0.5
        img = _background_and_clutter(rng, m, size, dark)
        radius = rng.uniform(0.16, 0.31, m) * size
        margin = 1.2 * radius                              # keeps every class inside the frame
        cy = margin + rng.random(m) * (size - 2 * margin)
        cx = margin + rng.random(m) * (size - 2 * margin)
        angle = rng.uniform(0, 2 * np.pi, m)
        aspect = rng.uniform(0.4, 0.6, m)
        colour = _shape_colours(rng, m, dark)
        _draw_shapes(img, None, kinds, cy, cx, radius, angle, aspect, colour,
                     np.ones(m, dtype=bool))
        images[start:start + m] = _finish(rng, img, normalize)
    return images, labels


def make_segmentation(n, seed, size=64, normalize=True, max_shapes=3):
    """Images with one to ``max_shapes`` non-overlapping shapes, and per-pixel class masks.

    Parameters
    ----------
    n : int
        Number of images.
    seed : int
        Seed for ``numpy.random.default_rng``; the output depends only on
        ``(n, seed, size, max_shapes)``.
    size : int, optional
        Image height and width in pixels (>= 16), by default 64. Shape radii are about
        0.12 to 0.22 of the side.
    normalize : bool, optional
        If True (default) return ``(pixel - MEAN) / STD``; else raw pixels in ``[0, 1]``.
    max_shapes : int, optional
        Most shapes per image, by default 3. Shapes never overlap (their bounding circles
        keep a 2 px gap); an image keeps fewer when no free place is found.

    Returns
    -------
    images : ndarray, float32, shape (n, 3, size, size)
    masks : ndarray, int64, shape (n, size, size)
        ``0`` = background (including clutter), ``1 + k`` = shape class ``CLASSES[k]``;
        ``NUM_CLASSES + 1`` classes in all.
    """
    n, size = _check(n, size)
    rng = np.random.default_rng(seed)
    images = np.empty((n, 3, size, size), dtype=np.float32)
    masks = np.empty((n, size, size), dtype=np.int64)
    s = max_shapes
    for start in range(0, n, _CHUNK):
        m = min(_CHUNK, n - start)
        dark = rng.random(m) < 0.5
        img = _background_and_clutter(rng, m, size, dark)
        count = rng.integers(1, s + 1, m)
        kinds = rng.integers(0, NUM_CLASSES, (m, s))
        radius = rng.uniform(0.12, 0.22, (m, s)) * size
        margin = 1.2 * radius
        bound = 1.2 * radius                               # bounding-circle radius of every class
        cy = np.empty((m, s))
        cx = np.empty((m, s))
        placed = np.zeros((m, s), dtype=bool)
        # Rejection sampling, vectorised over images: each shape gets up to 30 tries to
        # land clear of the shapes already placed; failures are dropped.
        for j in range(s):
            want = count > j
            for _ in range(30):
                todo = want & ~placed[:, j]
                if not todo.any():
                    break
                ty = margin[:, j] + rng.random(m) * (size - 2 * margin[:, j])
                tx = margin[:, j] + rng.random(m) * (size - 2 * margin[:, j])
                clear = np.ones(m, dtype=bool)
                for i in range(j):
                    dist = np.hypot(ty - cy[:, i], tx - cx[:, i])
                    clear &= ~placed[:, i] | (dist >= bound[:, i] + bound[:, j] + 2.0)
                take = todo & clear
                cy[take, j], cx[take, j] = ty[take], tx[take]
                placed[take, j] = True
        angle = rng.uniform(0, 2 * np.pi, (m, s))
        aspect = rng.uniform(0.4, 0.6, (m, s))
        colour = np.stack([_shape_colours(rng, m, dark) for _ in range(s)], axis=1)
        mask = np.zeros((m, size, size), dtype=np.int64)
        for j in range(s):
            _draw_shapes(img, mask, kinds[:, j], cy[:, j], cx[:, j], radius[:, j],
                         angle[:, j], aspect[:, j], colour[:, j], placed[:, j])
        images[start:start + m] = _finish(rng, img, normalize)
        masks[start:start + m] = mask
    return images, masks


def mean_iou(pred, target, num_classes=NUM_CLASSES + 1):
    """Mean intersection-over-union of integer label maps, over classes present.

    Intersections and unions are summed over the whole batch first (dataset-level IoU,
    as in the usual semantic-segmentation benchmarks), then averaged over the classes that
    occur in ``pred`` or ``target``.

    Parameters
    ----------
    pred, target : ndarray, int, same shape
        Predicted and true class per pixel.
    num_classes : int, optional
        Number of classes, by default ``NUM_CLASSES + 1`` (background + shapes).

    Returns
    -------
    miou : float
    per_class : ndarray, float64, shape (num_classes,)
        IoU per class, NaN for classes absent from both.
    """
    pred = np.asarray(pred).ravel()
    target = np.asarray(target).ravel()
    if pred.shape != target.shape:
        raise ValueError(f"pred and target differ in size: {pred.size} vs {target.size}")
    conf = np.bincount(target * num_classes + pred, minlength=num_classes ** 2)
    conf = conf.reshape(num_classes, num_classes)
    inter = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(union > 0, inter / union, np.nan)
    return float(np.nanmean(per_class)), per_class
