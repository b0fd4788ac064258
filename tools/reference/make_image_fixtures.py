#!/usr/bin/env python3
"""Image-processor reference fixtures for Nuri (Hugging Face transformers' Qwen2-VL).

  make_image_fixtures.py [--out-dir fixtures/images] [--keep-images] [--all-pixel-values]

1. Draws small deterministic test images (seeded gradients, shapes, noise) and
   saves them in several formats/modes under --out-dir.
2. Runs the PIL-backend Qwen2-VL image processor (`Qwen2VLImageProcessorPil`:
   Pillow BICUBIC resize on uint8, NumPy rescale/normalize) on every image, with
   default settings and, for the two large images, with a smaller max_pixels.
3. Writes reference.safetensors (per entry: RGB input after conversion, resized
   uint8 image, pixel_values, grid_thw) and reference.json (sizes, settings,
   versions, processor constants, a smart_resize table, fast-vs-PIL diffs).

Besides calling transformers, the script re-implements every step from scratch in
NumPy (smart_resize, alpha compositing onto white, Pillow's fixed-point BICUBIC,
rescale/normalize, patch flattening) and asserts bit-exact agreement; those
re-implementations are the spec the Rust side follows.

Offline: no hub access, nothing downloaded. Low CPU use (1 torch thread).
"""

import argparse
import hashlib
import json
import math
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import PIL  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from PIL import Image, ImageDraw, features  # noqa: E402
from safetensors.numpy import load_file, save_file  # noqa: E402
from transformers.image_utils import load_image  # noqa: E402
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (  # noqa: E402
    Qwen2VLImageProcessorPil,
)
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (  # noqa: E402
    smart_resize as hf_smart_resize,
)

try:  # the torchvision ("fast", default in transformers 5) backend, only for comparison
    import torchvision  # noqa: E402
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import (  # noqa: E402
        Qwen2VLImageProcessor,
    )
except Exception:  # pragma: no cover
    torchvision = None
    Qwen2VLImageProcessor = None

torch.set_num_threads(1)
torch.set_grad_enabled(False)

REPO = Path(__file__).resolve().parents[2]
SEED = 20240917

PATCH, MERGE, TPATCH = 14, 2, 2
FACTOR = PATCH * MERGE  # 28
PATCH_DIM = 3 * TPATCH * PATCH * PATCH  # 1176
DEFAULT_MIN_PIXELS = 56 * 56  # 3136
DEFAULT_MAX_PIXELS = 28 * 28 * 1280  # 1003520

# ---------------------------------------------------------------- test images
# file name -> (width, height, description)
IMAGES = {
    "rgb_odd.png": (37, 23, "RGB PNG, odd sizes; min_pixels upscale to 56x84"),
    "tiny_10x10.png": (10, 10, "RGB PNG 10x10; min_pixels upscale to 56x56"),
    "tall_32x800.png": (32, 800, "RGB PNG, aspect 25:1; default 812x28, max_pixels=3136 gives 280x28 (> max_pixels)"),
    "rgba.png": (45, 61, "RGBA PNG with varying alpha (0..255, fully transparent disc, opaque block)"),
    "gray.png": (50, 33, "L (8-bit grayscale) PNG"),
    "photo.jpg": (64, 48, "RGB JPEG quality 90 (Pillow defaults: 4:2:0 subsampling, baseline)"),
    "image.webp": (70, 42, "RGB lossless WebP; 70/28 = 2.5 and 42/28 = 1.5 are rounding ties (banker's rounding -> 56x56)"),
    "anim.gif": (30, 20, "animated GIF, 3 frames, mode P, no transparency; the processor sees frame 0"),
    "image.bmp": (33, 17, "24-bit BMP"),
    "wide_300x200.png": (300, 200, "RGB PNG; default 196x308, max_pixels=6272 downscales to 56x84 (antialiased bicubic)"),
}

# entry name -> (file, setting dict). setting: max_pixels override and/or input kind.
#   input "pil":  processor(PIL.Image.open(file))  -- the normal way (convert_to_rgb)
#   input "path": processor(str(file))             -- goes through transformers.image_utils.load_image
ENTRIES = {
    "rgb_odd": ("rgb_odd.png", {}),
    "tiny_10x10": ("tiny_10x10.png", {}),
    "tall_32x800": ("tall_32x800.png", {}),
    "tall_32x800__max3136": ("tall_32x800.png", {"max_pixels": 28 * 28 * 4}),
    "rgba": ("rgba.png", {}),
    "rgba__path": ("rgba.png", {"input": "path"}),
    "gray": ("gray.png", {}),
    "photo": ("photo.jpg", {}),
    "image_webp": ("image.webp", {}),
    "anim": ("anim.gif", {}),
    "image_bmp": ("image.bmp", {}),
    "wide_300x200": ("wide_300x200.png", {}),
    "wide_300x200__max6272": ("wide_300x200.png", {"max_pixels": 28 * 28 * 8}),
}

# pixel_values are big (n_patches * 4704 bytes, twice redundant because of the temporal
# broadcast) and are a pure function of `.resized` (asserted here for every entry); they are
# stored only for these entries so fixtures/images stays small. --all-pixel-values stores all.
PIXEL_VALUES_STORED = {"rgb_odd", "tiny_10x10", "rgba", "wide_300x200__max6272"}


def _pattern(w: int, h: int, rng: np.random.Generator, noise: int) -> np.ndarray:
    """uint8 [h, w, 3]: gradients + a sine wave + drawn shapes (incl. pure black/white) + noise."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 255.0 * xx / max(w - 1, 1)
    g = 255.0 * yy / max(h - 1, 1)
    b = 127.5 + 127.5 * np.sin(2 * np.pi * (xx / max(w / 1.7, 1) + yy / max(h / 2.3, 1)))
    base = np.clip(np.stack([r, g, b], -1).round(), 0, 255).astype(np.uint8)
    im = Image.fromarray(base, "RGB")
    d = ImageDraw.Draw(im)
    for _ in range(3):
        x0, x1 = sorted(rng.integers(0, w, 2).tolist())
        y0, y1 = sorted(rng.integers(0, h, 2).tolist())
        d.ellipse([x0, y0, x1, y1], fill=tuple(rng.integers(0, 256, 3).tolist()))
    x0, y0 = int(rng.integers(0, max(w // 2, 1))), int(rng.integers(0, max(h // 2, 1)))
    d.rectangle([x0, y0, x0 + max(w // 4, 1), y0 + max(h // 4, 1)], fill=(255, 255, 255))
    d.line([0, h - 1, w - 1, 0], fill=(0, 0, 0), width=max(1, min(w, h) // 12))
    arr = np.asarray(im).astype(np.int16)
    arr = arr + rng.integers(-noise, noise + 1, arr.shape)
    return np.clip(arr, 0, 255).astype(np.uint8)


def make_images(out: Path) -> dict:
    """Write the test images; return per-file generation notes."""
    rng = np.random.default_rng(SEED)
    notes = {}
    out.mkdir(parents=True, exist_ok=True)

    def pat(name, noise=12):
        w, h, _ = IMAGES[name]
        return _pattern(w, h, rng, noise)

    for name in ("rgb_odd.png", "tiny_10x10.png"):
        Image.fromarray(pat(name), "RGB").save(out / name, optimize=False)
    Image.fromarray(pat("tall_32x800.png", noise=6), "RGB").save(out / "tall_32x800.png")
    Image.fromarray(pat("wide_300x200.png", noise=3), "RGB").save(out / "wide_300x200.png")

    # RGBA: alpha = horizontal ramp 0..255, a fully transparent disc and a fully opaque block.
    w, h, _ = IMAGES["rgba.png"]
    rgb = pat("rgba.png")
    alpha = np.tile(np.round(np.linspace(0, 255, w)).astype(np.uint8), (h, 1))
    a_im = Image.fromarray(alpha, "L")
    d = ImageDraw.Draw(a_im)
    d.ellipse([w // 2, h // 8, w - 2, h // 8 + w // 2 - 2], fill=0)
    d.rectangle([2, h - h // 4, w // 3, h - 2], fill=255)
    alpha = np.asarray(a_im)
    alpha = np.clip(alpha.astype(np.int16) + rng.integers(-8, 9, alpha.shape) * (alpha % 255 != 0), 0, 255)
    Image.fromarray(np.dstack([rgb, alpha.astype(np.uint8)]), "RGBA").save(out / "rgba.png")

    # Grayscale L.
    g = pat("gray.png").astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    Image.fromarray(np.clip(g.round(), 0, 255).astype(np.uint8), "L").save(out / "gray.png")

    Image.fromarray(pat("photo.jpg", noise=6), "RGB").save(out / "photo.jpg", quality=90)
    Image.fromarray(pat("image.webp"), "RGB").save(out / "image.webp", lossless=True, quality=100, method=4)
    Image.fromarray(pat("image.bmp"), "RGB").save(out / "image.bmp")

    # Animated GIF: 3 palette frames, fixed 64-colour palette, no transparency.
    w, h, _ = IMAGES["anim.gif"]
    palette = rng.integers(0, 256, (64, 3)).astype(np.uint8)
    palette[0], palette[1] = (0, 0, 0), (255, 255, 255)
    frames = []
    yy, xx = np.mgrid[0:h, 0:w]
    for f in range(3):
        idx = ((xx * (3 + f) + yy * 5 + 7 * f) // 4) % 64
        idx = np.where(rng.random((h, w)) < 0.15, rng.integers(0, 64, (h, w)), idx).astype(np.uint8)
        fr = Image.frombytes("P", (w, h), idx.tobytes())
        fr.putpalette(palette.reshape(-1).tolist())
        frames.append(fr)
    frames[0].save(out / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0, optimize=False)
    notes["anim.gif"] = {"frame0_rgb_sha256": _sha(np.asarray(frames[0].convert("RGB")))}
    return notes


def _sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


# ---------------------------------------------------------------- from-scratch spec
def spec_smart_resize(h: int, w: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int, str]:
    """smart_resize with IEEE f64 arithmetic in the same order; round() is ties-to-even."""
    if max(h, w) / min(h, w) > 200:
        raise ValueError("aspect")
    hb = round(h / factor) * factor  # Python round: banker's rounding (Rust: f64::round_ties_even)
    wb = round(w / factor) * factor
    if hb * wb > max_pixels:
        beta = math.sqrt((h * w) / max_pixels)
        return max(factor, math.floor(h / beta / factor) * factor), max(factor, math.floor(w / beta / factor) * factor), "max"
    if hb * wb < min_pixels:
        beta = math.sqrt(min_pixels / (h * w))
        return math.ceil(h * beta / factor) * factor, math.ceil(w * beta / factor) * factor, "min"
    return hb, wb, "round"


def spec_composite_white(rgba: np.ndarray) -> np.ndarray:
    """Pillow ImagingAlphaComposite(white RGBA background, src) -> RGB, integer math.

    With dst = (255,255,255,255): outa255 = 255*255, coef1 = a*255*255*128 / outa255 = 128*a,
    coef2 = 255*128 - coef1; tmp = c*coef1 + 255*coef2;
    out = SHIFTFORDIV255(tmp + (0x80 << 7)) >> 7, SHIFTFORDIV255(x) = ((x >> 8) + x) >> 8;
    a == 0 -> 255 (the background pixel is copied).
    """
    c = rgba[..., :3].astype(np.uint32)
    a = rgba[..., 3:4].astype(np.uint32)
    coef1 = a * 255 * 255 * 128 // (255 * 255)
    coef2 = 255 * 128 - coef1
    tmp = c * coef1 + 255 * coef2 + (0x80 << 7)
    out = (((tmp >> 8) + tmp) >> 8) >> 7
    out = np.where(a == 0, 255, out)
    return out.astype(np.uint8)


PRECISION_BITS = 32 - 8 - 2  # 22


def _bicubic(x: float) -> float:
    a = -0.5
    if x < 0.0:
        x = -x
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    if x < 2.0:
        return (((x - 5) * x + 8) * x - 4) * a
    return 0.0


def _c_int(v: float) -> int:
    return int(v)  # C (int) cast: truncation toward zero, like Python int()


def spec_coeffs(in_size: int, out_size: int) -> np.ndarray:
    """Pillow precompute_coeffs + normalize_coeffs_8bpc as a dense int64 [out, in] matrix."""
    scale = float(in_size - 0) / out_size
    filterscale = max(scale, 1.0)
    support = 2.0 * filterscale  # BICUBIC support 2
    m = np.zeros((out_size, in_size), np.int64)
    for xx in range(out_size):
        center = 0.0 + (xx + 0.5) * scale
        ss = 1.0 / filterscale
        xmin = max(_c_int(center - support + 0.5), 0)
        xmax = min(_c_int(center + support + 0.5), in_size) - xmin
        k = []
        ww = 0.0
        for x in range(xmax):
            wgt = _bicubic((x + xmin - center + 0.5) * ss)
            k.append(wgt)
            ww += wgt
        for x in range(xmax):
            if ww != 0.0:
                k[x] /= ww
            kx = k[x] * (1 << PRECISION_BITS)
            m[xx, xmin + x] = _c_int(-0.5 + kx) if k[x] < 0 else _c_int(0.5 + kx)
    return m


def _pass(img: np.ndarray, coeffs: np.ndarray, axis: int) -> np.ndarray:
    """One 8-bpc pass: ss = 2^21 + sum(px * k); out = clamp(ss >> 22, 0, 255) (uint8 between passes)."""
    x = np.moveaxis(img.astype(np.int64), axis, -1)  # [..., in]
    ss = (1 << (PRECISION_BITS - 1)) + x @ coeffs.T  # [..., out]
    out = np.clip(ss >> PRECISION_BITS, 0, 255).astype(np.uint8)  # arithmetic shift = floor
    return np.moveaxis(out, -1, axis)


def pass_order(h: int, w: int, out_h: int, out_w: int, pillow13: bool = True) -> str:
    """Which separable passes Pillow runs, and in which order.

    Pillow <= 12.x: always horizontal first. Pillow 13.0.0 (PR #9549, "if height is scaled down
    significantly more than width, resize vertically first"): vertical first iff the height
    shrinks and its pixel reduction exceeds twice the width's: out_h < h and (h - out_h) > 2 * (w - out_w)
    (so always when the height shrinks while the width grows). The 13.0.0 rule was determined
    empirically against the installed wheel (check_spec asserts it on random and boundary cases).
    """
    need_h, need_v = out_w != w, out_h != h
    if not need_h and not need_v:
        return "none"
    if not need_v:
        return "horizontal_only"
    if not need_h:
        return "vertical_only"
    if pillow13 and out_h < h and (h - out_h) > 2 * (w - out_w):
        return "vertical_first"
    return "horizontal_first"


def spec_resize_bicubic(rgb: np.ndarray, out_h: int, out_w: int, pillow13: bool = True) -> np.ndarray:
    """Pillow Image.resize((out_w, out_h), BICUBIC) of an RGB uint8 image [h, w, 3]."""
    h, w, _ = rgb.shape
    order = pass_order(h, w, out_h, out_w, pillow13)
    if order == "none":
        return rgb.copy()  # Image.resize returns self.copy()
    hc = spec_coeffs(w, out_w) if out_w != w else None
    vc = spec_coeffs(h, out_h) if out_h != h else None
    if order == "vertical_first":
        return _pass(_pass(rgb, vc, axis=0), hc, axis=1)
    out = rgb
    if hc is not None:
        out = _pass(out, hc, axis=1)
    if vc is not None:
        out = _pass(out, vc, axis=0)
    return out


MEAN = [0.48145466, 0.4578275, 0.40821073]  # OPENAI_CLIP_MEAN
STD = [0.26862954, 0.26130258, 0.27577711]  # OPENAI_CLIP_STD


def spec_normalize(resized: np.ndarray) -> np.ndarray:
    """[H, W, 3] uint8 -> [3, H, W] float32: f32(f64(x) * f64(1/255)), then (x - mean_f32) / std_f32 in f32."""
    x = (resized.astype(np.float64) * (1 / 255)).astype(np.float32)
    x = (x - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def spec_patchify(chw: np.ndarray) -> np.ndarray:
    """[3, H, W] -> [gh*gw, 1176]; rows: (bh, bw, mh, mw) row-major over 2x2 merge blocks,
    columns: (c, t, py, px) with t in {0,1} both equal to the single frame."""
    c, hh, ww = chw.shape
    gh, gw = hh // PATCH, ww // PATCH
    p = chw.reshape(c, gh // MERGE, MERGE, PATCH, gw // MERGE, MERGE, PATCH)
    p = p.transpose(1, 4, 2, 5, 0, 3, 6)  # bh, bw, mh, mw, c, py, px
    p = np.broadcast_to(p[:, :, :, :, :, None], p.shape[:5] + (TPATCH,) + p.shape[5:])
    return np.ascontiguousarray(p.reshape(gh * gw, c * TPATCH * PATCH * PATCH))


def spec_to_rgb(im: Image.Image) -> np.ndarray:
    """transformers.image_transforms.convert_to_rgb for a PIL image (what the processor does)."""
    if "A" in im.getbands() or im.info.get("transparency") is not None:
        return spec_composite_white(np.asarray(im.convert("RGBA")))
    return np.asarray(im.convert("RGB"))


# ---------------------------------------------------------------- self-checks of the spec
def check_spec() -> dict:
    # smart_resize vs transformers over a sweep, including ties and both clamping paths.
    n = 0
    for mx in (DEFAULT_MAX_PIXELS, 3136, 6272, 12544, 28 * 28 * 16 * 4):
        for h in list(range(1, 160)) + [199, 200, 201, 800, 812, 1000, 4000]:
            for w in list(range(1, 160, 3)) + [300, 800, 2000]:
                try:
                    ref = hf_smart_resize(h, w, FACTOR, DEFAULT_MIN_PIXELS, mx)
                except ValueError:
                    try:
                        spec_smart_resize(h, w, FACTOR, DEFAULT_MIN_PIXELS, mx)
                    except ValueError:
                        continue
                    raise AssertionError(("aspect", h, w))
                got = spec_smart_resize(h, w, FACTOR, DEFAULT_MIN_PIXELS, mx)[:2]
                assert got == tuple(ref), (h, w, mx, got, ref)
                n += 1

    # Alpha compositing: all 256 x 256 (colour, alpha) pairs against Pillow.
    c, a = np.meshgrid(np.arange(256), np.arange(256), indexing="ij")
    rgba = np.stack([c, 255 - c, (c * 7) % 256, a], -1).astype(np.uint8)
    src = Image.fromarray(rgba, "RGBA")
    bg = Image.new("RGBA", src.size, (255, 255, 255, 255))
    pil = np.asarray(Image.alpha_composite(bg, src).convert("RGB"))
    assert np.array_equal(pil, spec_composite_white(rgba)), "alpha composite spec mismatch"

    # rescale: f32(x * (1/255)) == f32(x / 255) for every uint8?
    x = np.arange(256, dtype=np.float64)
    mul_eq_div = bool(np.array_equal((x * (1 / 255)).astype(np.float32), (x / 255).astype(np.float32)))

    # Bicubic: random images, many size pairs (up, down, mixed, identity, both pass orders and the
    # boundary of Pillow 13's order rule), against Pillow.
    rng = np.random.default_rng(7)
    pairs = [(23, 37, 56, 84), (10, 10, 56, 56), (200, 300, 56, 84), (200, 300, 196, 308),
             (800, 32, 280, 28), (800, 32, 812, 28), (61, 45, 56, 56), (5, 3, 1, 7),
             (97, 13, 28, 28), (28, 28, 28, 28), (40, 50, 40, 17), (1, 9, 3, 9),
             (60, 60, 16, 38), (60, 60, 16, 39), (60, 60, 15, 38), (38, 46, 7, 30), (84, 38, 8, 3)]
    for _ in range(150):
        h, w, oh, ow = (int(v) for v in rng.integers(1, 70, 4))
        pairs.append((h, w, oh, ow))
    orders = {}
    for (h, w, oh, ow) in pairs:
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        img[: h // 3, : w // 3] = 255
        img[h // 2:, w // 2:] = 0
        ref = np.asarray(Image.fromarray(img, "RGB").resize((ow, oh), Image.Resampling.BICUBIC))
        assert np.array_equal(ref, spec_resize_bicubic(img, oh, ow)), ("bicubic", h, w, oh, ow)
        o = pass_order(h, w, oh, ow)
        orders[o] = orders.get(o, 0) + 1
    # the boundary pairs really are on different sides and the orders really differ there
    assert pass_order(60, 60, 16, 38) == "horizontal_first" and pass_order(60, 60, 16, 39) == "vertical_first"
    return {"smart_resize_cases": n, "alpha_pairs": 65536, "bicubic_size_pairs": len(pairs), "bicubic_pass_orders": orders,
            "f32(x*(1/255)) == f32(x/255) for all uint8": mul_eq_div}


def smart_resize_table() -> list:
    """A compact table of smart_resize cases for unit tests (h, w, min, max -> h', w', path)."""
    cases = [
        (23, 37), (10, 10), (800, 32), (61, 45), (33, 50), (48, 64), (42, 70), (20, 30), (17, 33), (200, 300),
        (14, 300), (42, 42), (70, 70), (126, 126), (14, 14), (1, 1), (1, 199), (2, 400), (28, 28), (56, 56),
        (27, 29), (1000, 1000), (1080, 1920), (2160, 3840), (4000, 3000), (1003, 1000), (100, 10000), (513, 512),
    ]
    rows = []
    for mx in (DEFAULT_MAX_PIXELS, 3136, 6272, 12544):
        for h, w in cases:
            hh, ww, path = spec_smart_resize(h, w, FACTOR, DEFAULT_MIN_PIXELS, mx)
            assert (hh, ww) == tuple(hf_smart_resize(h, w, FACTOR, DEFAULT_MIN_PIXELS, mx))
            rows.append({"h": h, "w": w, "min_pixels": DEFAULT_MIN_PIXELS, "max_pixels": mx,
                         "out_h": hh, "out_w": ww, "path": path})
    return rows


# ---------------------------------------------------------------- reference runs
def pil_processor(max_pixels: int | None) -> Qwen2VLImageProcessorPil:
    size = {"shortest_edge": DEFAULT_MIN_PIXELS, "longest_edge": max_pixels or DEFAULT_MAX_PIXELS}
    return Qwen2VLImageProcessorPil(size=size) if max_pixels else Qwen2VLImageProcessorPil()


def fast_processor(max_pixels: int | None):
    size = {"shortest_edge": DEFAULT_MIN_PIXELS, "longest_edge": max_pixels or DEFAULT_MAX_PIXELS}
    return Qwen2VLImageProcessor(size=size) if max_pixels else Qwen2VLImageProcessor()


def run_entry(name: str, path: Path, setting: dict) -> tuple[dict, dict, np.ndarray, np.ndarray]:
    max_pixels = setting.get("max_pixels")
    kind = setting.get("input", "pil")
    proc = pil_processor(max_pixels)
    assert proc.size.longest_edge == (max_pixels or DEFAULT_MAX_PIXELS)
    assert proc.size.shortest_edge == DEFAULT_MIN_PIXELS

    src = Image.open(path)
    info = {"mode": src.mode, "size": list(src.size), "format": src.format,
            "n_frames": getattr(src, "n_frames", 1),
            "has_transparency_info": src.info.get("transparency") is not None}
    if src.format == "JPEG":
        from PIL import JpegImagePlugin

        info["jpeg_subsampling"] = {0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}.get(JpegImagePlugin.get_sampling(src), "other")
        info["jpeg_progressive"] = bool(src.info.get("progressive", False))

    # 1) the processor itself
    inp = str(path) if kind == "path" else Image.open(path)
    out = proc(images=inp, return_tensors="np")
    pv, grid = out["pixel_values"], out["image_grid_thw"]
    assert pv.dtype == np.float32 and grid.dtype == np.int64 and grid.shape == (1, 3), (pv.dtype, grid)

    # 2) the same pipeline step by step with the processor's own methods
    pil_in = load_image(str(path)) if kind == "path" else Image.open(path)
    chw = proc.process_image(pil_in, do_convert_rgb=proc.do_convert_rgb)  # convert_to_rgb, CHW uint8
    assert chw.dtype == np.uint8 and chw.shape[0] == 3
    resized = proc.resize(chw, size=proc.size, resample=proc.resample, factor=proc.patch_size * proc.merge_size)
    assert resized.dtype == np.uint8
    normed = proc.normalize(proc.rescale(resized, proc.rescale_factor), proc.image_mean, proc.image_std)
    steps, gh, gw = proc.patchify(normed, proc.patch_size, proc.merge_size, proc.temporal_patch_size)
    assert np.array_equal(steps.view(np.uint32), pv.view(np.uint32)), f"{name}: step-by-step != processor"
    assert [1, gh, gw] == grid[0].tolist()

    # 3) the from-scratch spec
    rgb = np.ascontiguousarray(chw.transpose(1, 2, 0))
    if kind == "path":
        spec_rgb = np.asarray(load_image(str(path)))  # exif_transpose + convert("RGB"): alpha DROPPED
        assert np.array_equal(spec_rgb, np.asarray(Image.open(path).convert("RGB")))
    else:
        spec_rgb = spec_to_rgb(Image.open(path))
    assert np.array_equal(spec_rgb, rgb), f"{name}: RGB conversion spec mismatch"
    h, w = rgb.shape[:2]
    oh, ow, sr_path = spec_smart_resize(h, w, FACTOR, proc.size.shortest_edge, proc.size.longest_edge)
    res_hwc = np.ascontiguousarray(resized.transpose(1, 2, 0))
    assert res_hwc.shape == (oh, ow, 3)
    assert np.array_equal(spec_resize_bicubic(rgb, oh, ow), res_hwc), f"{name}: bicubic spec mismatch"
    order = pass_order(h, w, oh, ow)
    old_pillow = spec_resize_bicubic(rgb, oh, ow, pillow13=False)  # Pillow <= 12.x (always horizontal first)
    old_diff = np.abs(old_pillow.astype(np.int16) - res_hwc.astype(np.int16))
    spec_pv = spec_patchify(spec_normalize(res_hwc))
    assert np.array_equal(spec_pv.view(np.uint32), pv.view(np.uint32)), f"{name}: normalize/patchify spec mismatch"
    assert pv.shape == (gh * gw, PATCH_DIM)

    tensors = {f"{name}.grid_thw": grid.astype(np.int64), f"{name}.resized": res_hwc}
    entry = {
        "file": path.name,
        "input": kind,
        "source": info,
        "rgb_size": [w, h],
        "smart_resize_path": sr_path,
        "resized_size": [ow, oh],
        "bicubic_pass_order": order,
        "pillow_le_12_resized_max_abs_diff": int(old_diff.max()),
        "pillow_le_12_resized_frac_differing": float((old_diff > 0).mean()),
        "grid_thw": grid[0].tolist(),
        "n_patches": int(pv.shape[0]),
        "min_pixels": int(proc.size.shortest_edge),
        "max_pixels": int(proc.size.longest_edge),
        "pixel_values_sha256": _sha(pv.astype("<f4")),
        "pixel_values_sum": float(pv.astype(np.float64).sum()),
        "resized_sha256": _sha(res_hwc),
    }

    # 4) the torchvision ("fast", default) processor on the same input
    if Qwen2VLImageProcessor is not None:
        fproc = fast_processor(max_pixels)
        finp = str(path) if kind == "path" else Image.open(path)
        fout = fproc(images=finp, return_tensors="pt")
        fpv, fgrid = fout["pixel_values"].numpy(), fout["image_grid_thw"].numpy()
        cmp = {"grid_equal": bool(np.array_equal(fgrid, grid))}
        if cmp["grid_equal"]:
            d = np.abs(fpv.astype(np.float64) - pv.astype(np.float64))
            cmp["pixel_values_max_abs_diff"] = float(d.max())
            cmp["pixel_values_mean_abs_diff"] = float(d.mean())
            # split: resize difference vs normalize-arithmetic difference
            ft = torch.from_numpy(np.ascontiguousarray(chw))[None]
            if kind == "path":
                ft = fproc.process_image(fproc.fetch_images(str(path)), do_convert_rgb=True)[None]
                cmp["fast_rgb_equal_pil_rgb"] = bool(np.array_equal(ft[0].numpy(), chw))
            fres = fproc.resize(ft, size=fproc.size, resample=fproc.resample, factor=FACTOR)[0].numpy()
            rd = np.abs(fres.astype(np.int16) - resized.astype(np.int16))
            cmp["resized_max_abs_diff_levels"] = int(rd.max())
            od = np.abs(fres.astype(np.int16) - old_pillow.transpose(2, 0, 1).astype(np.int16))
            cmp["resized_max_abs_diff_vs_pillow_le_12_levels"] = int(od.max())
            cmp["resized_frac_values_differing"] = float((rd > 0).mean())
            fn = fproc.rescale_and_normalize(torch.from_numpy(resized)[None], True, fproc.rescale_factor, True,
                                             fproc.image_mean, fproc.image_std)
            fn_p, _, _ = fproc.patchify(fn, PATCH, MERGE, TPATCH)
            cmp["normalize_only_max_abs_diff"] = float(np.abs(fn_p[0].numpy().astype(np.float64) - pv).max())
        entry["fast_vs_pil"] = cmp
    return entry, tensors, pv, rgb


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", default=str(REPO / "fixtures" / "images"))
    ap.add_argument("--keep-images", action="store_true", help="do not redraw the images, only recompute references")
    ap.add_argument("--all-pixel-values", action="store_true", help="store pixel_values for every entry")
    args = ap.parse_args()
    out = Path(args.out_dir).resolve()

    gen_notes = {} if args.keep_images else make_images(out)
    spec_checks = check_spec()

    # Sanity of the written files (formats/modes as intended).
    gif = Image.open(out / "anim.gif")
    assert gif.mode == "P" and gif.n_frames == 3 and gif.info.get("transparency") is None, (gif.mode, gif.info)
    if "anim.gif" in gen_notes:
        assert _sha(np.asarray(gif.convert("RGB"))) == gen_notes["anim.gif"]["frame0_rgb_sha256"]
    assert Image.open(out / "gray.png").mode == "L"
    assert Image.open(out / "rgba.png").mode == "RGBA"
    bmp_bpp = int.from_bytes((out / "image.bmp").read_bytes()[28:30], "little")
    assert bmp_bpp == 24, bmp_bpp
    webp_bytes = (out / "image.webp").read_bytes()
    assert webp_bytes[12:16] == b"VP8L", webp_bytes[12:16]  # lossless bitstream

    tensors, entries = {}, {}
    rgb_done = set()
    for name, (fname, setting) in ENTRIES.items():
        entry, t, pv, rgb = run_entry(name, out / fname, setting)
        if args.all_pixel_values or name in PIXEL_VALUES_STORED:
            t[f"{name}.pixel_values"] = np.ascontiguousarray(pv)
        entry["pixel_values_stored"] = f"{name}.pixel_values" in t
        # RGB after conversion (before resize), once per (file, input kind): under the entry name
        # without its "__<setting>" suffix. Skipped for the two large 8-bit RGB PNGs, whose decoded
        # pixels are exactly the file contents.
        if fname not in ("wide_300x200.png", "tall_32x800.png"):
            key = name if setting.get("input") == "path" else name.split("__")[0]
            if key not in rgb_done:
                t[f"{key}.rgb"] = rgb
                rgb_done.add(key)
            entry["rgb_tensor"] = f"{key}.rgb"
        tensors.update(t)
        entry["tensors"] = sorted(t)
        entries[name] = entry
        fv = entry.get("fast_vs_pil", {})
        print(f"{name:24s} {entry['source']['mode']:5s} {entry['rgb_size']} -> {entry['resized_size']} "
              f"grid {entry['grid_thw']} fast-pil max {fv.get('pixel_values_max_abs_diff', float('nan')):.4g} "
              f"(resized max {fv.get('resized_max_abs_diff_levels')} levels)", flush=True)

    for k, v in tensors.items():
        assert v.flags["C_CONTIGUOUS"] and v.dtype in (np.uint8, np.int64, np.float32), (k, v.dtype)
    st_path = out / "reference.safetensors"
    save_file(tensors, str(st_path))
    os.chmod(st_path, 0o644)
    back = load_file(str(st_path))
    assert all(np.array_equal(back[k], tensors[k]) for k in tensors)

    proc = Qwen2VLImageProcessorPil()
    doc = {
        "generator": "tools/reference/make_image_fixtures.py",
        "seed": SEED,
        "processor_class": f"{type(proc).__module__}.{type(proc).__name__}",
        "fast_processor_class": (f"{Qwen2VLImageProcessor.__module__}.{Qwen2VLImageProcessor.__name__}"
                                 if Qwen2VLImageProcessor is not None else None),
        "versions": {
            "transformers": transformers.__version__,
            "pillow": PIL.__version__,
            "numpy": np.__version__,
            "torch": torch.__version__,
            "torchvision": torchvision.__version__ if torchvision is not None else None,
            "libjpeg_turbo": features.version("libjpeg_turbo"),
            "libwebp": features.version("webp"),
            "zlib": features.version("zlib"),
        },
        "processor": {
            "image_mean": list(proc.image_mean),
            "image_std": list(proc.image_std),
            "rescale_factor": proc.rescale_factor,
            "patch_size": proc.patch_size,
            "merge_size": proc.merge_size,
            "temporal_patch_size": proc.temporal_patch_size,
            "min_pixels": int(proc.size.shortest_edge),
            "max_pixels": int(proc.size.longest_edge),
            "resample": int(proc.resample),
            "resample_name": "PIL.Image.Resampling.BICUBIC",
            "reducing_gap": None,
            "bicubic_pass_order_rule": "Pillow 13.0.0: vertical pass first iff out_h < h and (h - out_h) > 2 * (w - out_w); "
                                       "otherwise horizontal first (Pillow <= 12.x: always horizontal first); a pass is "
                                       "skipped when its size is unchanged; uint8 (clipped) intermediate between passes",
            "do_convert_rgb": proc.do_convert_rgb,
            "do_resize": proc.do_resize,
            "do_rescale": proc.do_rescale,
            "do_normalize": proc.do_normalize,
        },
        "tensor_layout": {
            "<entry>.pixel_values": "float32 [n_patches, 1176]; only where pixel_values_stored (else use sha256/sum)",
            "<entry>.grid_thw": "int64 [1, 3] = [1, H/14, W/14]",
            "<entry>.resized": "uint8 [H, W, 3], RGB right after the PIL BICUBIC resize, before rescale/normalize",
            "<entry>.rgb": "uint8 [h, w, 3], RGB after convert_to_rgb (before resize), named after the entry without its __setting suffix; see each entry's rgb_tensor",
        },
        "notes": [
            "Reference = Qwen2VLImageProcessorPil with default settings (plus the max_pixels overrides named in "
            "the entry), called on PIL.Image.open(file) (input 'pil') or on the path string (input 'path').",
            "pixel_values == patchify(normalize(resized)) bit-exactly for every entry (asserted).",
            "Every step is re-implemented from scratch in the generator (spec_* functions) and asserted bit-exact.",
            "pixel_values_sha256 is over the little-endian float32 bytes in row-major order.",
            "fast_vs_pil: torchvision backend (Qwen2VLImageProcessor, the transformers 5 default) vs the PIL "
            "backend; resized_* compare the uint8 images right after resize; normalize_only_max_abs_diff feeds "
            "the PIL-resized image through the fast backend's fused rescale+normalize.",
        ],
        "self_checks": spec_checks,
        "images": {k: {"width": v[0], "height": v[1], "description": v[2]} for k, v in IMAGES.items()},
        "entries": entries,
        "smart_resize_table": smart_resize_table(),
    }
    (out / "reference.json").write_text(json.dumps(doc, indent=1) + "\n")

    total = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    print(f"wrote {out} ({total / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
