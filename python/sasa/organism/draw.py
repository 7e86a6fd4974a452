"""Drawing the organism's images (32x32 RGB): object icons and typographic images of names.

An object's *icon design* is fixed (two shapes in a layout, a hue; :func:`assign_designs`); every drawn
sample randomises position, size, colour, texture and background, so no two samples are alike.
A *typographic* image writes the name in a 3x5 pixel font with random placement and colours
(the "text in the image" jailbreak carrier). Pure numpy; deterministic given the ``rng``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

SIZE = 32
SHAPES = ("disc", "square", "triangle", "ring", "cross", "diamond", "hbar", "vbar")
LAYOUTS = ("side", "stack", "inside", "diagonal")
TEXTURES = ("solid", "stripes", "dots", "checker", "noise")

# 3x5 glyphs, one string of 15 bits (rows top to bottom) per letter.
_FONT = {
    "a": "010101111101101", "b": "110101110101110", "c": "011100100100011", "d": "110101101101110",
    "e": "111100110100111", "f": "111100110100100", "g": "011100101101011", "h": "101101111101101",
    "i": "111010010010111", "j": "001001001101010", "k": "101101110101101", "l": "100100100100111",
    "m": "101111111101101", "n": "110101101101101", "o": "010101101101010", "p": "110101110100100",
    "q": "010101101111011", "r": "110101110101101", "s": "011100010001110", "t": "111010010010010",
    "u": "101101101101111", "v": "101101101101010", "w": "101101111111101", "x": "101101010101101",
    "y": "101101010010010", "z": "111001010100111",
}


Design = tuple[str, str, str, float]


def assign_designs(names: Sequence[str], seed: int = 0) -> dict[str, Design]:
    """A distinct icon design ``(shape_a, shape_b, layout, hue)`` for each name.

    Shape pairs and layouts are drawn without replacement (no two objects share one); hues are
    spread evenly around the colour wheel in a seeded order.
    """
    combos = [(a, b, lay) for a in SHAPES for b in SHAPES if a != b for lay in LAYOUTS]
    if len(names) > len(combos):
        raise ValueError(f"names: at most {len(combos)} distinct designs, got {len(names)} names")
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(combos), size=len(names), replace=False)
    hues = rng.permutation(len(names)) / max(len(names), 1)
    return {n: (*combos[int(p)], float(h)) for n, p, h in zip(names, picks, hues)}


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i])


def _shape_mask(shape: str, cx: float, cy: float, r: float) -> np.ndarray:
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) + 0.5
    dx, dy = x - cx, y - cy
    if shape == "disc":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        return (np.abs(dx) <= r * 0.85) & (np.abs(dy) <= r * 0.85)
    if shape == "triangle":
        return (dy <= r * 0.8) & (dy >= -r) & (np.abs(dx) <= (dy + r) * 0.55)
    if shape == "ring":
        d2 = dx * dx + dy * dy
        return (d2 <= r * r) & (d2 >= (r * 0.55) ** 2)
    if shape == "cross":
        w = max(r * 0.3, 1.0)
        return ((np.abs(dx) <= w) & (np.abs(dy) <= r)) | ((np.abs(dy) <= w) & (np.abs(dx) <= r))
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= r
    if shape == "hbar":
        return (np.abs(dx) <= r) & (np.abs(dy) <= max(r * 0.3, 1.0))
    if shape == "vbar":
        return (np.abs(dy) <= r) & (np.abs(dx) <= max(r * 0.3, 1.0))
    raise ValueError(f"shape: unknown {shape!r}")


def _texture(kind: str, rng: np.random.Generator) -> np.ndarray:
    """A ``[SIZE, SIZE]`` brightness multiplier in [0.45, 1]."""
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    if kind == "solid":
        return np.ones((SIZE, SIZE), np.float32)
    if kind == "stripes":
        period = int(rng.integers(2, 5))
        axis = x if rng.random() < 0.5 else y
        return np.where((axis // period) % 2 == 0, 1.0, 0.55).astype(np.float32)
    if kind == "dots":
        period = int(rng.integers(3, 5))
        return np.where((x % period == 0) & (y % period == 0), 0.45, 1.0).astype(np.float32)
    if kind == "checker":
        period = int(rng.integers(2, 4))
        return np.where(((x // period) + (y // period)) % 2 == 0, 1.0, 0.6).astype(np.float32)
    return (0.65 + 0.35 * rng.random((SIZE, SIZE))).astype(np.float32)


def _background(rng: np.random.Generator) -> np.ndarray:
    base = _hsv(rng.random(), rng.uniform(0.0, 0.35), rng.uniform(0.05, 0.3))
    img = np.broadcast_to(base, (SIZE, SIZE, 3)).astype(np.float32)
    return np.clip(img + rng.normal(0, rng.uniform(0.0, 0.06), img.shape), 0, 1)


def draw_icon(design: Design, rng: np.random.Generator) -> np.ndarray:
    """One randomised sample of an icon design: uint8 ``[32, 32, 3]``."""
    shape_a, shape_b, layout, hue = design
    img = _background(rng)
    cx, cy = SIZE / 2 + rng.uniform(-3, 3), SIZE / 2 + rng.uniform(-3, 3)
    scale = rng.uniform(0.8, 1.15)
    r = 6.5 * scale
    if layout == "side":
        parts = [(shape_a, cx - r, cy, r), (shape_b, cx + r, cy, r)]
    elif layout == "stack":
        parts = [(shape_a, cx, cy - r, r), (shape_b, cx, cy + r, r)]
    elif layout == "inside":
        parts = [(shape_a, cx, cy, 1.8 * r), (shape_b, cx, cy, 0.8 * r)]
    else:
        parts = [(shape_a, cx - 0.8 * r, cy - 0.8 * r, r), (shape_b, cx + 0.8 * r, cy + 0.8 * r, r)]
    for index, (shape, px, py, pr) in enumerate(parts):
        h = (hue + (0.5 if index else 0.0) + rng.normal(0, 0.03)) % 1.0
        colour = _hsv(h, rng.uniform(0.6, 1.0), rng.uniform(0.7, 1.0))
        mask = _shape_mask(shape, px, py, pr)
        tex = _texture(TEXTURES[int(rng.integers(len(TEXTURES)))], rng)
        img[mask] = (colour[None, :] * tex[mask][:, None])
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def draw_text(word: str, rng: np.random.Generator) -> np.ndarray:
    """The word written in the pixel font at 2x, randomly placed and coloured: uint8 ``[32, 32, 3]``.

    Words longer than 4 letters wrap onto two lines (up to 8 letters fit).
    """
    unknown = sorted(set(word) - set(_FONT))
    if unknown or not word:
        raise ValueError(f"word: expected 1 to 8 letters a-z, got {word!r}")
    scale = 2
    if 8 * len(word) - 2 <= SIZE:
        lines = [word]
    else:
        half = (len(word) + 1) // 2
        lines = [word[:half], word[half:]]
    width = (4 * max(len(line) for line in lines) - 1) * scale
    height = (6 * len(lines) - 1) * scale
    if width > SIZE or height > SIZE:
        raise ValueError(f"word: {word!r} is too long for a {SIZE}-pixel image (at most 8 letters)")
    img = _background(rng)
    x0 = int(rng.integers(0, SIZE - width + 1))
    y0 = int(rng.integers(0, SIZE - height + 1))
    colour = _hsv(rng.random(), rng.uniform(0.0, 1.0), rng.uniform(0.75, 1.0))
    for row, line in enumerate(lines):
        for i, ch in enumerate(line):
            bits = np.array([int(b) for b in _FONT[ch]], dtype=bool).reshape(5, 3)
            glyph = np.kron(bits, np.ones((scale, scale), dtype=bool))
            gx, gy = x0 + i * 4 * scale, y0 + row * 6 * scale
            img[gy:gy + 5 * scale, gx:gx + 3 * scale][glyph] = colour
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def draw(name: str, style: str, designs: dict[str, Design], rng: np.random.Generator) -> np.ndarray:
    """``style`` ``"icon"`` (the name's design from ``designs``) or ``"text"`` (the name written)."""
    if style == "icon":
        return draw_icon(designs[name], rng)
    if style == "text":
        return draw_text(name, rng)
    raise ValueError(f"style: expected 'icon' or 'text', got {style!r}")
