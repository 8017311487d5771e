"""The embedded synthetic ultrasound suite: the 27 FMC_UIA tasks drawn as B-mode-like images with exact labels.

No labelled ultrasound ships with any package, so tests, examples and benchmarks run on this suite. Every
image is an echogenicity map of the task's anatomy (drawn from one entry of `_ANATOMY`), turned into
speckle the way a scanner does it: random scatterers weighted by the echogenicity, convolved with the
pulse's point-spread function, envelope-detected as the magnitude of the complex (I/Q) signal, attenuated
with depth and log-compressed, inside a convex, phased or linear field of view. See docs/synthetic.md.

    suite = SyntheticUltrasoundSuite(scale=0.1, image_size=64, seed=0)
    example = suite.example("fetal_head", "train", 3)   # regenerates that one example alone
    dataset = suite.dataset("train")                      # all tasks, interleaved, generated on the fly

Coordinates: points and boxes are in pixels with the image spanning [0, W] x [0, H] (pixel j covers
[j, j+1), its centre is j + 0.5); a box is the tight box of the object's pixels, so x_max > x_min.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import math
import os
import shutil
import sys
import textwrap
import time
import zlib
from collections import namedtuple
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
from scipy import ndimage

from modeling_m2dino.task_types import TASK_TYPES
from modeling_m2dino.tasks import EXTRA_TASKS, FMC_UIA_TASKS, TaskSpec

from ..task_types import TRAINING_TASK_TYPES, training_task_type

SPLITS = ("train", "val", "test")
_SPLIT_CODE = {"train": 0, "val": 1, "test": 2}
_TASK_POS = {t.id: k for k, t in enumerate(FMC_UIA_TASKS + EXTRA_TASKS)}
_TASK_KEY = {t.id: zlib.crc32(t.id.encode()) for t in FMC_UIA_TASKS + EXTRA_TASKS}  # stable when the registry is reordered

# Train examples per task at scale=1.0, mirroring the real imbalance at roughly a tenth of its size:
# obstetrics large, breast / lung / detection / regression small. Val and test: VAL_FRACTION of train.
TRAIN_SIZES = {
    "FUGC": 100, "IUGC": 150, "fetal_femur": 80,
    "fetal_head_pos_cls": 400, "fetal_plane_cls": 600, "fetal_sacral_pos_cls": 300,
    "cervix": 200, "cervix_multi": 150, "fetal_abdomen_multi": 300, "fetal_head": 500,
    "fetal_heart": 250, "head_symphysis_multi": 400,
    "breast_2cls": 120, "breast_3cls": 160, "breast_lesion": 120,
    "lung_2cls": 80, "lung_disease_3cls": 100, "lung": 60,
    "thyroid_nodule_det": 120, "thyroid_nodule": 200,
    "cardiac_multi": 300, "carotid_artery": 150,
    "liver_lesion_2cls": 100, "organ_cls": 250,
    "ovary_tumor": 120, "uterine_fibroid_det": 100, "spinal_cord_injury_loc": 60,
}
VAL_FRACTION = 0.25
MIN_EXAMPLES = 4  # per split; classification tasks keep at least two examples of every class on top

# Relative class frequencies (classification), so majority-class baselines are not trivially 1/K.
CLASS_WEIGHTS = {
    "fetal_head_pos_cls": (5, 2, 2, 1, 3, 1, 2, 2),
    "fetal_sacral_pos_cls": (3, 2, 2, 1, 2, 1, 2, 2),
    "fetal_plane_cls": (3, 3, 2, 2, 1, 3),
    "breast_2cls": (2, 1), "breast_3cls": (1, 3, 2),
    "lung_2cls": (2, 3), "lung_disease_3cls": (2, 2, 3),
    "liver_lesion_2cls": (3, 2), "organ_cls": (3, 2, 1, 1, 1, 1),
}

# Task pairs whose cues relate by construction (docs/synthetic.md, "Transfer by design"): one with shared,
# consistent cues (positive transfer expected), one whose shared-looking cue means opposite things
# (negative transfer possible). `python -m m2dino_training.transfer_check` trains them alone and together.
TRANSFER_PAIRS = {
    "consistent": ("breast_2cls", "breast_3cls"),  # one breast scene; malignant = bright, irregular in both
    "conflicting": ("breast_2cls", "liver_lesion_2cls"),  # bright, irregular = malignant in breast, benign in liver
}

# Echogenicity (amplitude reflectivity; 1.0 = average soft tissue, displayed mid-grey).
FLUID, BRAIN, SOFT, BONE = 0.03, 0.35, 0.7, 4.0


# A clinical group's look, shared by all its tasks: display gain, net depth attenuation, speckle grain
# (PSF sigmas, axial and lateral, in pixels at 224 px) and low-frequency tissue heterogeneity.
_Style = namedtuple("_Style", "gain_db atten_db psf texture")

_STYLES = {
    "obstetrics": _Style(0.0, 9.0, (0.9, 1.7), 0.25),
    "breast": _Style(3.0, 6.0, (0.7, 1.2), 0.3),
    "lung": _Style(-1.0, 8.0, (1.1, 2.0), 0.2),
    "thyroid": _Style(2.0, 5.0, (0.7, 1.1), 0.2),
    "cardiovascular": _Style(-2.0, 7.0, (1.0, 1.9), 0.25),
    "abdomen": _Style(1.0, 10.0, (1.0, 1.8), 0.2),
    "gynecology": _Style(0.0, 8.0, (0.9, 1.6), 0.3),
    "spine": _Style(2.0, 5.0, (0.7, 1.2), 0.25),
}
_DYNAMIC_RANGE_DB, _TOP_DB = 50.0, 24.0  # E = 1 speckle maps to grey ~120

# Fields of view in normalised image coordinates. Sector: apex, first and last radius, half-angle.
_PROBES = {
    "convex": ("sector", (0.5, -0.35), 0.40, 1.32, math.radians(33)),
    "phased": ("sector", (0.5, 0.02), 0.0, 0.95, math.radians(40)),
    "linear": ("linear", (0.03, 0.97), (0.02, 1.0)),
}


def _fov_points(probe, x, y):
    """(inside the field of view, normalised depth from the probe face) for points or grids."""
    spec = _PROBES[probe]
    if spec[0] == "sector":
        (ax, ay), r0, r1, half = spec[1:]
        r = np.hypot(x - ax, y - ay)
        inside = (r >= r0) & (r <= r1) & (np.abs(np.arctan2(x - ax, y - ay)) <= half)
        depth = (r - r0) / (r1 - r0)
    else:
        (x0, x1), (y0, y1) = spec[1:]
        inside = (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
        depth = (y - y0) / (y1 - y0) + 0 * x
    return inside, np.clip(depth, 0.0, 1.0)


@lru_cache(maxsize=64)
def _fov_raster(n, probe, atten_db):
    """Field-of-view mask and the attenuation gain map (zero outside), cached per size and probe."""
    g = (np.arange(n, dtype=np.float32) + 0.5) / n
    inside, depth = _fov_points(probe, g[None, :], g[:, None])
    gain = (10.0 ** (-atten_db * depth / 20.0) * inside).astype(np.float32)
    inside.setflags(write=False), gain.setflags(write=False)
    return inside, gain


@lru_cache(maxsize=32)
def _kernel(sigma):
    """Gaussian PSF profile with unit L2 norm, so unit-variance scatterers give unit-variance signal."""
    r = max(1, int(math.ceil(3 * sigma)))
    k = np.exp(-0.5 * (np.arange(-r, r + 1, dtype=np.float32) / sigma) ** 2)
    return k / np.sqrt((k**2).sum())


@lru_cache(maxsize=32)
def _upsampler(n, k):
    """(n, k) matrix of bilinear weights from k control points to n pixel centres."""
    grid, ctrl = (np.arange(n) + 0.5) / n, (np.arange(k) + 0.5) / k
    return np.stack([np.interp(grid, ctrl, np.eye(k)[j]) for j in range(k)], 1).astype(np.float32)


def _margin(phi, spec):
    """Radius scale of an irregular margin at angle phi: lobulations plus narrow spicules."""
    ks, amps, phases, spike = spec
    m = 1.0 + sum(a * np.cos(k * phi + p) for k, a, p in zip(ks, amps, phases))
    if spike:
        m = m + spike[1] * np.cos(spike[0] * phi + spike[2]) ** 8
    return m


class _Canvas:
    """One image being drawn: echogenicity map, class mask and normalised pixel-centre coordinates.

    Drawing helpers return full-size arrays, computed only inside the shape's bounding window (speed).
    `fill(region, echo, part)` paints the echogenicity and, when the task labels that part, the mask.
    """

    def __init__(self, n, rng, probe, task, parts):
        self.n, self.rng, self.probe, self.task, self.parts = n, rng, probe, task, parts
        g = (np.arange(n, dtype=np.float32) + 0.5) / n
        self.gx, self.gy = g[None, :], g[:, None]
        self.echo = np.full((n, n), 0.5, np.float32)
        self.mask = np.zeros((n, n), np.uint8)

    def uni(self, lo, hi):
        return float(self.rng.uniform(lo, hi))

    def chance(self, p):
        return bool(self.rng.random() < p)

    def place(self, rad, xr=(0.3, 0.7), yr=(0.4, 0.65)):
        """A centre whose circle of radius `rad` lies inside the field of view (rejection sampling)."""
        ang = np.linspace(0, 2 * np.pi, 16, endpoint=False)
        for _ in range(40):
            cx, cy = self.uni(*xr), self.uni(*yr)
            px, py = cx + (rad + 0.02) * np.cos(ang), cy + (rad + 0.02) * np.sin(ang)
            if _fov_points(self.probe, px, py)[0].all() and px.min() > 0 and px.max() < 1 and py.max() < 1:
                return cx, cy
        return 0.5, 0.6

    def _window(self, xlo, xhi, ylo, yhi):
        n = self.n
        lo = lambda v: min(n, max(0, int(math.floor(v * n))))
        hi = lambda v: min(n, max(0, int(math.ceil(v * n)) + 1))
        return slice(lo(ylo), hi(yhi)), slice(lo(xlo), hi(xhi))

    def frame(self, cx, cy, ang):
        """Full-size coordinates (along, across) of a frame centred at (cx, cy), rotated by ang."""
        dx, dy = self.gx - cx, self.gy - cy
        ca, sa = math.cos(ang), math.sin(ang)
        return dx * ca + dy * sa, dy * ca - dx * sa

    def ellipse(self, cx, cy, a, b, ang=0.0, margin=None, reach=1.1):
        """Normalised radius (< 1 inside) of a rotated ellipse with an optional irregular margin; 9 far out."""
        ext = max(a, b) * (reach + (0.9 if margin else 0.0)) + 2.0 / self.n
        ys, xs = self._window(cx - ext, cx + ext, cy - ext, cy + ext)
        out = np.full((self.n, self.n), 9.0, np.float32)
        dx, dy = self.gx[:, xs] - cx, self.gy[ys] - cy
        ca, sa = math.cos(ang), math.sin(ang)
        u, v = (dx * ca + dy * sa) / a, (dy * ca - dx * sa) / b
        r = np.sqrt(u * u + v * v)
        out[ys, xs] = r / _margin(np.arctan2(v, u), margin) if margin else r
        return out

    def segment(self, p0, p1, reach=0.06):
        """Distance to the segment p0-p1 (normalised units); 9 beyond `reach`."""
        (x0, y0), (x1, y1) = p0, p1
        ys, xs = self._window(min(x0, x1) - reach, max(x0, x1) + reach, min(y0, y1) - reach, max(y0, y1) + reach)
        out = np.full((self.n, self.n), 9.0, np.float32)
        px, py = self.gx[:, xs] - x0, self.gy[ys] - y0
        dx, dy = x1 - x0, y1 - y0
        t = np.clip((px * dx + py * dy) / max(dx * dx + dy * dy, 1e-12), 0.0, 1.0)
        out[ys, xs] = np.hypot(px - t * dx, py - t * dy)
        return out

    def layer(self, y0, half, tilt=0.0, wave=0.0, phase=0.0):
        """A horizontal tissue layer (band) around depth y0, optionally tilted and wavy."""
        centre = y0 + tilt * (self.gx - 0.5) + wave * np.sin(4 * np.pi * self.gx + phase)
        return np.abs(self.gy - centre) < half

    def fill(self, region, echo, part=None):
        """Set the echogenicity (a scalar or a full-size array) in region; label it if `part` is labelled."""
        self.echo[region] = echo if np.isscalar(echo) else echo[region]
        if part in self.parts:
            self.mask[region] = self.parts[part]

    def shadow(self, region, factor):
        """Posterior shadowing (factor < 1) or enhancement (> 1) in the columns beneath a structure."""
        below = np.logical_or.accumulate(region, axis=0) & ~region
        self.echo[below] *= factor

    def irregular(self, amp=0.1, spikes=0.3):
        """A random lobulated (and optionally spiculated) margin for `ellipse`."""
        ks = self.rng.choice([3, 4, 5, 6, 7, 9], 3, replace=False)
        spike = (int(self.rng.integers(5, 9)), spikes, self.uni(0, 6.3)) if spikes else None
        return ks, self.rng.uniform(0.5 * amp, amp, 3), self.rng.uniform(0, 6.3, 3), spike


def _render(c, style):
    """Echogenicity -> B-mode: scatterers x echo, PSF, |I + iQ| envelope, attenuation, log compression.

    Simulated at baseband: the carrier of the RF pulse drops out of the envelope, so complex Gaussian
    scatterers convolved with the pulse's Gaussian envelope give the same Rayleigh speckle as RF + Hilbert.
    """
    n = c.n
    fov, gain = _fov_raster(n, c.probe, style.atten_db)
    up = _upsampler(n, 7)  # low-frequency tissue heterogeneity: a 7x7 random field, bilinear upsampled
    hetero = np.exp(style.texture * (up @ c.rng.standard_normal((7, 7), dtype=np.float32) @ up.T))
    echo = c.echo * hetero * gain
    iq = c.rng.standard_normal((2, n, n), dtype=np.float32) * echo
    ax, lat = (max(0.6, s * n / 224.0) for s in style.psf)
    iq = ndimage.convolve1d(iq, _kernel(round(ax, 2)), axis=1, mode="reflect")
    iq = ndimage.convolve1d(iq, _kernel(round(lat, 2)), axis=2, mode="reflect")
    power = 0.5 * (iq[0] * iq[0] + iq[1] * iq[1])  # |envelope|^2, mean = echo^2
    db = 10.0 * np.log10(power + 1e-6)
    top = _TOP_DB + style.gain_db + c.uni(-1.5, 1.5)
    grey = (db - (top - _DYNAMIC_RANGE_DB)) * (255.0 / _DYNAMIC_RANGE_DB)
    return np.where(fov, np.clip(grey, 0, 255), 0).astype(np.uint8)


# ---------------------------------------------------------------------------------------------- anatomy
# Each function draws one scene into the canvas and returns its named geometry (landmarks in normalised
# coordinates, regions as boolean arrays). `name` is the example's class name (classification) or None.


def _obstetric_scene(c):
    """Maternal abdominal wall over an amniotic-fluid pool: the backdrop every fetal view shares."""
    c.echo[:] = 0.6
    c.fill(c.layer(c.uni(0.08, 0.12), 0.014, c.uni(-0.06, 0.06), 0.01, c.uni(0, 6.3)), 1.8)
    c.fill(c.ellipse(0.5 + c.uni(-0.04, 0.04), 0.62, c.uni(0.52, 0.6), c.uni(0.4, 0.45)) < 1, FLUID)


def _skull(c, cx, cy, a, b, ang, part="head"):
    """Fetal head: dim brain, bright skull ring (constant thickness in image units), midline echo."""
    r = c.ellipse(cx, cy, a, b, ang)
    c.fill(r < 1, BRAIN, part)
    c.fill((r < 1) & (r > 1 - 0.032 / b), BONE)
    d = (0.8 * a * math.cos(ang), 0.8 * a * math.sin(ang))
    c.fill(c.segment((cx - d[0], cy - d[1]), (cx + d[0], cy + d[1])) < 0.007, 1.6)


def _fetal_head(c, name=None):
    _obstetric_scene(c)
    a = c.uni(0.17, 0.26)
    cx, cy = c.place(a, yr=(0.42, 0.65))
    _skull(c, cx, cy, a, a * c.uni(0.74, 0.88), c.uni(0, math.pi))
    return {}


def _direction(c, name, jitter=0.22):
    """Orientation classes: class k points at -90 + 45 k degrees (up = anterior, then clockwise)."""
    return -math.pi / 2 + c.task.labels.index(name) * math.pi / 4 + c.uni(-jitter, jitter)


def _head_position(c, name):
    """Fetal head (transverse view) whose occiput direction is the class (8 classes).

    Cues as a scan shows them, large enough for a 4x4 patch grid at 64 px: the occipito-frontal axis is the
    long axis of the head and carries the midline echo; the occipital bone is thicker and brighter than the
    rest of the skull; the neck (soft tissue with the bright cervical vertebrae and their shadows) leaves the
    head at the occiput and runs out into the fluid; the two dark orbits sit at the opposite (frontal) pole."""
    _obstetric_scene(c)
    th = _direction(c, name)
    a = c.uni(0.16, 0.2)
    cx, cy = c.place(a, xr=(0.4, 0.6), yr=(0.46, 0.58))
    cx, cy = cx - 0.06 * math.cos(th), cy - 0.06 * math.sin(th)  # room for the neck on the occiput side
    b = a * c.uni(0.8, 0.88)
    at = lambda f, t=0.0: (cx + f * math.cos(th + t), cy + f * math.sin(th + t))
    neck_end = at(a + c.uni(0.17, 0.21))
    c.fill(c.segment(at(0.6 * a), neck_end, reach=0.08) < c.uni(0.05, 0.06), SOFT)
    vertebrae = np.zeros((c.n, c.n), bool)
    for k in range(4):
        vertebrae |= c.ellipse(*at(a + 0.02 + 0.045 * k), 0.02, 0.026, th) < 1
    c.fill(vertebrae, BONE)
    c.shadow(vertebrae, 0.45)
    _skull(c, cx, cy, a, b, th)
    u = c.frame(cx, cy, th)[0]
    r = c.ellipse(cx, cy, a, b, th)
    c.fill((r < 1.04) & (r > 1 - 0.06 / b) & (u > 0.55 * a), BONE, "occiput")  # thick occipital bone
    for side in (-1, 1):  # orbits, at the frontal pole
        ox, oy = at(0.62 * a, math.pi + side * 0.45)
        c.fill(c.ellipse(ox, oy, 0.028, 0.024, th) < 1, FLUID)
    return {}


def _sacral_position(c, name):
    """Fetal breech (transverse view of the pelvis) whose sacrum direction is the class (8 classes).

    Cues large enough for a 4x4 patch grid at 64 px: the sacrum is a thick bright bony arc on the trunk's
    wall, flanked by the iliac wings converging on it (a V opening forwards), with its acoustic shadow; the
    fetal bladder lies in front of it; the flexed thighs (soft tissue around a bright femur) leave the trunk
    on the opposite, anterior side and run out into the fluid."""
    _obstetric_scene(c)
    th = _direction(c, name)
    a = c.uni(0.16, 0.2)
    cx, cy = c.place(a, xr=(0.4, 0.6), yr=(0.46, 0.58))
    cx, cy = cx + 0.06 * math.cos(th), cy + 0.06 * math.sin(th)  # room for the thighs on the anterior side
    b = a * c.uni(0.85, 0.95)
    at = lambda f, t=0.0: (cx + f * math.cos(th + t), cy + f * math.sin(th + t))
    for side in (-1, 1):  # flexed thighs, in front of the trunk
        p0, p1 = at(0.5 * a, math.pi + side * 0.3), at(a + c.uni(0.15, 0.19), math.pi + side * 0.22)
        c.fill(c.segment(p0, p1, reach=0.08) < 0.045, SOFT)
        c.fill(c.segment(at(a, math.pi + side * 0.27), p1, reach=0.04) < 0.012, BONE)
    r = c.ellipse(cx, cy, a, b, c.uni(0, math.pi))
    c.fill(r < 1, SOFT, "trunk")
    c.fill((r < 1) & (r > 1 - 0.018 / b), 1.5)
    u = c.frame(cx, cy, th)[0]
    bone = (r < 1) & (r > 1 - 0.07 / b) & (u > 0.45 * a)  # sacrum: a thick arc on the posterior wall
    for side in (-1, 1):  # iliac wings: from the sacrum forwards, converging on it
        bone |= c.segment(at(0.8 * a, side * 0.55), at(0.25 * a, side * 1.1), reach=0.04) < 0.014
    c.fill(bone, BONE, "sacrum")
    c.shadow(bone, 0.5)
    c.fill(c.ellipse(*at(-0.3 * a), 0.055, 0.045, th) < 1, FLUID)  # fetal bladder, anterior
    return {}


def _femur(c, name=None):
    """Femur: bright linear bone in the thigh with an acoustic shadow; its ends are the landmarks."""
    _obstetric_scene(c)
    half, ang = c.uni(0.13, 0.27), c.uni(-0.6, 0.6)
    cx, cy = c.place(half + 0.03, xr=(0.3, 0.7), yr=(0.4, 0.68))
    d = (half * math.cos(ang), half * math.sin(ang))
    p0, p1 = (cx - d[0], cy - d[1]), (cx + d[0], cy + d[1])
    c.fill(c.ellipse(cx, cy, half + 0.07, c.uni(0.08, 0.11), ang) < 1, SOFT)
    bone = c.segment(p0, p1, reach=0.04) < c.uni(0.014, 0.02)
    c.fill(bone, BONE)
    c.shadow(bone, 0.2)
    return {"femur_left_end": p0, "femur_right_end": p1}  # p0 is always the left end (|ang| < pi/2)


def _fetal_abdomen(c, name=None):
    """Fetal abdomen: round trunk, anechoic stomach, umbilical vein anteriorly, bright spine posteriorly."""
    _obstetric_scene(c)
    a = c.uni(0.2, 0.27)
    cx, cy = c.place(a, yr=(0.45, 0.62))
    b, ang = a * c.uni(0.86, 0.97), c.uni(0, 2 * math.pi)
    at = lambda t, f: (cx + f * b * math.cos(ang + t), cy + f * b * math.sin(ang + t))
    r = c.ellipse(cx, cy, a, b, ang)
    c.fill(r < 1, SOFT, "abdomen")
    c.fill((r < 1) & (r > 1 - 0.015 / b), 1.5)
    # Stomach to one side, umbilical vein anteriorly, spine posteriorly: apart, so each is its own blob.
    c.fill(c.ellipse(*at(1.5, 0.42), 0.3 * b, 0.26 * b, ang + 1.5) < 1, FLUID, "stomach")
    c.fill(c.ellipse(*at(math.pi, 0.45), 0.36 * b, 0.035, ang + math.pi) < 1, FLUID, "umbilical_vein")
    spine = c.ellipse(*at(0.0, 0.62), 0.08, 0.055, ang + math.pi / 2) < 1
    c.fill(spine, BONE, "spine")
    c.shadow(spine, 0.4)
    return {}


def _fetal_thorax(c, name=None):
    """Fetal thorax: bright lungs and ribs, spine, and a four-chamber heart anteriorly (the labelled part)."""
    _obstetric_scene(c)
    a = c.uni(0.21, 0.27)
    cx, cy = c.place(a, yr=(0.45, 0.62))
    b, ang = a * c.uni(0.88, 0.97), c.uni(0, 2 * math.pi)
    r = c.ellipse(cx, cy, a, b, ang)
    c.fill(r < 1, 1.0)
    c.fill((r < 1) & (r > 1 - 0.022 / b), 2.2)
    c.fill(c.ellipse(cx + 0.7 * b * math.cos(ang), cy + 0.7 * b * math.sin(ang), 0.055, 0.04, ang + 1.57) < 1, BONE)
    hang = ang + math.pi + 0.5
    hx, hy, ha, hb = cx + 0.3 * b * math.cos(hang), cy + 0.3 * b * math.sin(hang), 0.5 * b, 0.42 * b
    c.fill(c.ellipse(hx, hy, ha, hb, hang) < 1, 1.3, "heart")
    for s, t in ((1, 1), (1, -1), (-1, 1), (-1, -1)):  # four chambers around a bright crux
        u, v = 0.42 * ha * s, 0.42 * hb * t
        px = hx + u * math.cos(hang) - v * math.sin(hang)
        py = hy + u * math.sin(hang) + v * math.cos(hang)
        c.fill(c.ellipse(px, py, 0.36 * ha, 0.34 * hb, hang) < 1, FLUID)
    return {}


def _cervix(c, name=None):
    """Transvaginal cervix: a tilted echogenic body split by the canal (bright line in dark mucus).

    The canal's ends are the landmarks: the internal os at the deeper end, next to the uterine body; the
    external os at the shallower end, next to a small fluid pocket (the vaginal fornix)."""
    c.echo[:] = 0.45
    if c.chance(0.6):
        c.fill(c.ellipse(c.uni(0.3, 0.45), c.uni(0.18, 0.24), c.uni(0.1, 0.16), 0.06) < 1, FLUID)  # bladder
    a, b, ang = c.uni(0.2, 0.3), c.uni(0.09, 0.13), c.uni(0.0, 0.7)
    cx, cy = c.place(a * 0.9, xr=(0.33, 0.62), yr=(0.38, 0.66))
    d = (math.cos(ang), math.sin(ang))
    c.fill(c.ellipse(cx + 1.2 * a * d[0], cy + 1.2 * a * d[1], 0.5 * a, 2.0 * b, ang) < 1, 0.8)  # uterus
    c.fill(c.ellipse(cx - 1.05 * a * d[0], cy - 1.05 * a * d[1], 0.08, 0.05, ang) < 1, FLUID)  # fornix
    inside = c.ellipse(cx, cy, a, b, ang) < 1
    v = c.frame(cx, cy, ang)[1]
    c.fill(inside & (v < 0), 1.4, "anterior_lip")
    c.fill(inside & (v >= 0), 1.0, "posterior_lip")
    p_ext, p_int = (cx - 0.8 * a * d[0], cy - 0.8 * a * d[1]), (cx + 0.8 * a * d[0], cy + 0.8 * a * d[1])
    canal = c.segment(p_ext, p_int)
    c.fill(canal < 0.022, 0.12)
    c.fill(canal < 0.007, 3.0)
    return {"internal_os": p_int, "external_os": p_ext}


def _intrapartum(c, name=None):
    """Transperineal intrapartum view: bright elongated pubic symphysis and the fetal head below it.

    IUGC landmarks: the symphysis's two ends and the point where the tangent from its inferior end
    touches the skull (on the side making the larger angle with the symphysis axis: angle of progression)."""
    c.echo[:] = 0.55
    a, hx, hy = c.uni(0.17, 0.24), c.uni(0.48, 0.68), c.uni(0.52, 0.68)
    b, hang = a * c.uni(0.82, 0.9), c.uni(-0.4, 0.4)
    psi, gap, length = c.uni(-2.7, -1.9), c.uni(0.05, 0.1), c.uni(0.14, 0.22)
    ix, iy = hx + (a + gap) * math.cos(psi), hy + (a + gap) * math.sin(psi)
    gam = psi + c.uni(-0.5, 0.2)
    sx, sy = ix + length * math.cos(gam), iy + length * math.sin(gam)
    sym = c.ellipse((ix + sx) / 2, (iy + sy) / 2, length / 2, c.uni(0.032, 0.045), gam) < 1
    c.fill(sym, 3.5, "symphysis")
    c.shadow(sym, 0.5)
    _skull(c, hx, hy, a, b, hang, part="head")
    # Tangent points from P: affine-map the ellipse to the unit circle, where they are at base +- acos(1/rho).
    ca, sa = math.cos(hang), math.sin(hang)
    u, v = ((ix - hx) * ca + (iy - hy) * sa) / a, ((iy - hy) * ca - (ix - hx) * sa) / b
    base, delta = math.atan2(v, u), math.acos(1.0 / math.hypot(u, v))
    axis = math.atan2(iy - sy, ix - sx)
    best = None
    for phi in (base + delta, base - delta):
        ex, ey = a * math.cos(phi), b * math.sin(phi)
        tx, ty = hx + ex * ca - ey * sa, hy + ex * sa + ey * ca
        turn = abs((math.atan2(ty - iy, tx - ix) - axis + math.pi) % (2 * math.pi) - math.pi)
        if best is None or turn > best[0]:
            best = (turn, (tx, ty))
    return {"symphysis_superior": (sx, sy), "symphysis_inferior": (ix, iy), "head_tangent": best[1]}


def _placenta(c, name=None):
    """'Other' fetal plane: an anterior placenta and free loops of umbilical cord in the fluid."""
    _obstetric_scene(c)
    top, th = c.uni(0.16, 0.22), c.uni(0.1, 0.16)
    c.fill(c.layer(top + th / 2, th / 2, c.uni(-0.15, 0.15), 0.02, c.uni(0, 6.3)), 1.1)
    for _ in range(int(c.rng.integers(3, 6))):
        x, y = c.uni(0.3, 0.7), c.uni(0.5, 0.8)
        for dx in (-0.028, 0.028):
            r = c.ellipse(x + dx, y, 0.03, 0.03)
            c.fill((r < 1) & (r > 0.5), 1.4)
    return {}


_FETAL_PLANES = {"abdomen": _fetal_abdomen, "brain": _fetal_head, "femur": _femur,
                 "thorax": _fetal_thorax, "cervix": _cervix, "other": _placenta}


def _fetal_plane(c, name):
    return _FETAL_PLANES[name](c)


def _lesion(c, cx, cy, size, bright, irregular, tall, post, part):
    """A focal lesion. Its cues are echogenicity, margin, orientation and posterior enhancement/shadow,
    and what they mean is set per organ by the caller (so the cues conflict across groups)."""
    b = size * (c.uni(1.0, 1.3) if tall else c.uni(0.55, 0.75) if not irregular else c.uni(0.8, 1.0))
    margin = c.irregular(0.12, 0.3) if irregular else None
    region = c.ellipse(cx, cy, size, b, c.uni(-0.3, 0.3), margin) < 1
    c.fill(region, c.uni(2.2, 3.0) if bright else c.uni(0.06, 0.15), part)
    c.shadow(region, post)
    return region


def _breast(c, name=None):
    """Breast: skin, fat with lobules, fibroglandular layer, pectoral muscle; a lesion unless 'normal'.

    Breast cue: malignant = bright, irregular/spiculated, taller-than-wide, shadowing;
    benign = dark, smooth, wider-than-tall oval with posterior enhancement."""
    c.echo[:] = 0.55
    fat, gland = c.uni(0.18, 0.26), c.uni(0.64, 0.74)
    c.fill(c.gy > gland + 0.03 * np.sin(5 * c.gx), 0.55)
    c.fill((c.gy > fat) & (c.gy < gland + 0.03 * np.sin(5 * c.gx)), 1.0)
    c.fill((c.gy > 0.05) & (c.gy < fat + 0.02 * np.sin(7 * c.gx + 1)), 0.3)
    for _ in range(2):
        c.fill(c.ellipse(c.uni(0.15, 0.85), c.uni(0.08, fat - 0.03), 0.05, 0.02) < 1, 0.2)
    c.fill(c.layer(0.04, 0.01), 2.5)
    for k in range(3):
        c.fill(c.layer(gland + 0.08 + 0.07 * k, 0.006, c.uni(-0.1, 0.1)), 1.3)
    if name == "normal":
        return {}
    malignant = name == "malignant" if name else c.chance(0.5)
    size = c.uni(0.08, 0.14)
    cx, cy = c.uni(0.28, 0.72), c.uni(0.4, 0.52)
    _lesion(c, cx, cy, size, malignant, malignant, malignant, 0.35 if malignant else 1.8, "lesion")
    return {}


def _lung(c, name=None):
    """Lung: chest wall, two ribs with shadows, bright pleural line; below it the aerated lung (labelled)
    with A-lines (normal), B-lines (vertical comet tails) and/or a consolidation, by class."""
    c.echo[:] = 0.6
    yp, tilt = c.uni(0.26, 0.34), c.uni(-0.06, 0.06)
    for f in (0.45, 0.7):
        c.fill(c.layer(f * yp, 0.007, tilt), 1.2)
    xl, xr = c.uni(0.14, 0.26), c.uni(0.74, 0.86)
    pleura = yp + tilt * (c.gx - 0.5)
    between = (c.gx > xl + 0.065) & (c.gx < xr - 0.065)
    lung = (c.gy > pleura + 0.012) & between
    c.fill(lung, 0.3, "lung")
    kind = {"normal": "A", "abnormal": c.rng.choice(["B", "C"]), "pneumonia": "C", "covid19": "B",
            None: c.rng.choice(["A", "B", "C"])}[name]
    if kind == "A":
        for k in (1, 2):
            c.fill(lung & c.layer(yp + k * (yp - 0.04), 0.012, tilt), 1.5 / k)
    if kind == "B" or (name == "pneumonia" and c.chance(0.5)):
        many = name == "covid19"
        for _ in range(int(c.rng.integers(4, 8) if many else c.rng.integers(1, 3) if name == "pneumonia" else 4)):
            c.fill(lung & (np.abs(c.gx - c.uni(xl + 0.1, xr - 0.1)) < c.uni(0.015, 0.03)), 2.2)
    if kind == "C":
        cx, a = c.uni(xl + 0.2, xr - 0.2), c.uni(0.12, 0.2)
        cons = lung & (c.ellipse(cx, yp + 0.02, a, c.uni(0.15, 0.25), 0.0, c.irregular(0.12, 0.0)) < 1)
        c.fill(cons, 0.9)
        for _ in range(5):
            c.fill(cons & (c.ellipse(cx + c.uni(-0.6, 0.6) * a, yp + c.uni(0.04, 0.14), 0.02, 0.012) < 1), 3.0)
    line = c.layer(yp, 0.018 if name == "covid19" else 0.011, tilt) & (c.gx > xl) & (c.gx < xr)
    if name == "covid19":  # fragmented, thickened pleura
        line &= np.sin(2 * np.pi * c.gx / c.uni(0.06, 0.09) + c.uni(0, 6.3)) > -0.3
    c.fill(line, 3.5)
    for x in (xl, xr):
        rib = (c.ellipse(x, yp - 0.01, 0.065, 0.035) < 1) & (c.gy < yp - 0.01)
        c.fill(rib, 3.5)
        c.shadow(rib, 0.06)
    return {}


def _thyroid(c, name=None):
    """Thyroid lobe (bright, homogeneous) under strap muscles, trachea to one side, carotid to the other;
    one nodule of random style (hypo-, hyper-echoic, cystic or iso with a dark halo)."""
    c.echo[:] = 0.55
    c.fill(c.layer(0.035, 0.01), 2.2)
    c.fill(c.layer(c.uni(0.11, 0.14), 0.04, c.uni(-0.1, 0.1), 0.01), 0.35)
    side = 1 if c.chance(0.5) else -1
    lx, ly, la, lb = 0.5 - side * c.uni(-0.04, 0.1), c.uni(0.4, 0.56), c.uni(0.3, 0.36), c.uni(0.17, 0.21)
    c.fill(c.ellipse(0.5 - side * 0.46, ly, 0.07, 0.07) < 1, FLUID)  # carotid
    c.fill(c.ellipse(lx, ly, la, lb) < 1, 1.25)
    tr = c.ellipse(0.5 + side * 0.45, ly - 0.05, 0.13, 0.1)
    c.fill((tr < 1) & (tr > 0.8) & (c.gy < ly - 0.05), 3.0)
    c.shadow((tr < 1) & (tr > 0.8), 0.15)
    na = c.uni(0.06, 0.12)
    nx, ny = lx + c.uni(-0.75, 0.75) * (la - na), ly + c.uni(-0.5, 0.5) * (lb - na)
    kind = int(c.rng.integers(4))
    r = c.ellipse(nx, ny, na, na * c.uni(0.7, 1.1), c.uni(-0.5, 0.5), c.irregular(0.1, 0.0) if c.chance(0.4) else None)
    nodule = r < 1
    c.fill(nodule, (0.25, FLUID, 2.6, 0.12)[kind], "nodule")
    if kind == 3:  # isoechoic core inside the dark halo
        c.fill(r < 1 - max(0.025 / na, 0.25), 1.1)
    if kind == 1:
        c.shadow(nodule, 1.7)
    return {"nodule": nodule}


def _cardiac(c, name=None):
    """Apical view (phased array): LV cavity inside a myocardium horseshoe, left atrium beyond the mitral
    plane; right heart to the side as an unlabelled distractor."""
    c.echo[:] = 0.3
    al = math.pi / 2 + c.uni(-0.25, 0.25)
    d, nrm = (math.cos(al), math.sin(al)), (-math.sin(al), math.cos(al))
    apex = (0.5 + c.uni(-0.05, 0.05), c.uni(0.1, 0.15))
    a, bw, w = c.uni(0.17, 0.22), c.uni(0.08, 0.11), c.uni(0.035, 0.05)
    cx, cy = apex[0] + a * d[0], apex[1] + a * d[1]
    pt = lambda t, s: (cx + t * d[0] + s * nrm[0], cy + t * d[1] + s * nrm[1])
    c.fill(c.ellipse(*pt(0.3 * a, 0), 1.5 * a, bw + w + 0.18, al) < 1, 1.0)  # pericardial surroundings
    rv = c.ellipse(*pt(0.0, -(bw + w + 0.08)), 0.85 * a, 0.07, al)
    c.fill(rv < 1, FLUID)
    c.fill(c.ellipse(*pt(1.05 * a, -(bw + w + 0.07)), 0.09, 0.07, al) < 1, FLUID)  # right atrium
    t, s = c.frame(cx, cy, al)
    base = 0.75 * a
    c.fill((np.abs(t - base) < 0.012) & (np.abs(s) < bw + w), 2.2)  # mitral annulus
    outer, cav = c.ellipse(cx, cy, a + w, bw + w, al), c.ellipse(cx, cy, a, bw, al)
    c.fill((outer < 1) & (t < base - 0.012), 1.1, "myo")
    c.fill((cav < 1) & (t < base - 0.012), FLUID, "lv")
    la_a, la_b = c.uni(0.08, 0.11), c.uni(0.08, 0.11)
    c.fill(c.ellipse(*pt(base + 0.015 + la_a, 0.0), la_a, la_b, al) < 1, FLUID, "la")
    return {}


def _carotid(c, name=None):
    """Carotid artery (linear probe): anechoic lumen with bright walls, transverse (with the jugular vein,
    anechoic but wall-less, as a distractor) or longitudinal. The label covers lumen and walls."""
    c.echo[:] = 0.6
    c.fill(c.layer(0.035, 0.01), 2.2)
    c.fill(c.layer(c.uni(0.15, 0.2), 0.05, c.uni(-0.1, 0.1), 0.01), 0.4)
    wall = c.uni(0.018, 0.025)
    if c.chance(0.5):
        r0 = c.uni(0.09, 0.13)
        cx, cy = c.uni(0.32, 0.68), c.uni(0.45, 0.62)
        side = 1 if cx < 0.5 else -1
        ja = c.uni(0.08, 0.12)
        c.fill(c.ellipse(cx + side * (r0 + ja + 0.03), cy - c.uni(0.04, 0.1), ja, 0.5 * ja) < 1, FLUID)
        vessel, lumen = c.ellipse(cx, cy, r0 + wall, r0 + wall) < 1, c.ellipse(cx, cy, r0, r0) < 1
    else:
        h = c.uni(0.07, 0.1)
        dist = np.abs(c.gy - (c.uni(0.42, 0.6) + c.uni(-0.12, 0.12) * (c.gx - 0.5)
                              + 0.02 * np.sin(3 * c.gx + c.uni(0, 6.3))))
        vessel, lumen = dist < h + wall, dist < h
    c.fill(vessel, 2.8, "vessel")
    c.fill(lumen, FLUID)
    c.shadow(vessel, 1.3)
    return {}


def _liver_scene(c):
    """Liver parenchyma with anechoic vessels and a bright curved diaphragm at depth."""
    c.echo[:] = 0.9
    r = c.ellipse(c.uni(0.6, 0.9), c.uni(1.2, 1.35), 0.6, 0.55)
    c.fill(r > 1.0, 0.35)
    c.fill(np.abs(r - 1.0) < 0.04, 3.2)
    for _ in range(int(c.rng.integers(2, 5))):
        x, y, t, h = c.uni(0.2, 0.8), c.uni(0.3, 0.7), c.uni(0, math.pi), c.uni(0.04, 0.1)
        tube = c.segment((x - h * math.cos(t), y - h * math.sin(t)), (x + h * math.cos(t), y + h * math.sin(t)))
        c.fill(tube < c.uni(0.015, 0.025), 2.0 if c.chance(0.5) else 0.9)
        c.fill(tube < c.uni(0.008, 0.012), FLUID)


def _liver(c, name):
    """Liver lesion, with the cue OPPOSITE to the breast's: benign = bright, lobulated (haemangioma-like);
    malignant = dark, smooth, round."""
    _liver_scene(c)
    malignant = name == "malignant"
    size = c.uni(0.1, 0.15)
    cx, cy = c.place(size * 1.3, yr=(0.38, 0.58))
    _lesion(c, cx, cy, size, not malignant, not malignant, False, 1.3, "lesion")
    return {}


def _kidney(c):
    c.echo[:] = 0.8
    a, ang = c.uni(0.24, 0.3), c.uni(-0.4, 0.4)
    cx, cy = c.place(a, yr=(0.42, 0.6))
    b = a * c.uni(0.5, 0.6)
    r = c.ellipse(cx, cy, a, b, ang)
    c.fill(r < 1, 0.4)
    c.fill((r < 1) & (r > 1 - 0.015 / b), 2.0)
    for k in range(5):  # medullary pyramids around the sinus
        t = -math.pi / 2 + k * math.pi / 4 + ang
        c.fill(c.ellipse(cx + 0.55 * a * math.cos(t), cy + 0.55 * b * math.sin(t), 0.035, 0.025, t) < 1, 0.12)
    c.fill(c.ellipse(cx, cy, 0.55 * a, 0.32 * b, ang, c.irregular(0.12, 0.0)) < 1, 2.6)


def _spleen(c):
    c.echo[:] = 0.3
    cx, cy, a, b = c.uni(0.4, 0.6), c.uni(0.45, 0.55), c.uni(0.28, 0.34), c.uni(0.18, 0.24)
    outer = c.ellipse(cx, cy, a, b, c.uni(-0.3, 0.3))
    c.fill((outer < 1) & (c.ellipse(cx - 0.1, cy + 0.16, a, b) > 1), 1.2)
    c.fill((outer > 1) & (outer < 1 + 0.03 / b) & (c.gy < cy), 3.0)


def _gallbladder(c):
    _liver_scene(c)
    a, ang = c.uni(0.14, 0.2), c.uni(-0.5, 0.5)
    cx, cy = c.place(a, yr=(0.35, 0.55))
    r = c.ellipse(cx, cy, a, a * c.uni(0.4, 0.55), ang, reach=1.3)
    c.fill((r < 1.0 + 0.015 / (0.4 * a)), 2.0)
    c.fill(r < 1, FLUID)
    c.shadow(r < 1, 1.5)
    if c.chance(0.4):
        stone = c.ellipse(cx, cy + 0.3 * a * 0.4, 0.025, 0.02) < 1
        c.fill(stone, BONE)
        c.shadow(stone, 0.1)


def _bladder(c):
    c.echo[:] = 0.6
    a, b = c.uni(0.25, 0.32), c.uni(0.17, 0.24)
    cx, cy = c.uni(0.42, 0.58), c.uni(0.38, 0.48)
    u, v = c.frame(cx, cy, c.uni(-0.15, 0.15))
    q = (u / a) ** 4 + (v / b) ** 4  # a rounded box
    c.fill(q < 1.3, 1.8)
    c.fill(q < 1, FLUID)
    c.shadow(q < 1, 1.8)


def _pancreas(c):
    c.echo[:] = 0.85
    y0, h = c.uni(0.33, 0.45), c.uni(0.05, 0.07)
    centre = y0 + 0.4 * (c.gx - 0.5) ** 2 + c.uni(-0.08, 0.08) * (c.gx - 0.5)
    span = np.abs(c.gx - 0.5) < 0.36
    c.fill(span & (np.abs(c.gy - centre) < h), 1.5)
    c.fill(span & (np.abs(c.gy - centre - h - 0.02) < 0.016), FLUID)  # splenic vein
    ax, ay = c.uni(0.42, 0.58), y0 + h + c.uni(0.12, 0.16)
    c.fill(c.ellipse(ax, ay, 0.065, 0.06) < 1, 2.0)
    c.fill(c.ellipse(ax, ay, 0.05, 0.045) < 1, FLUID)  # aorta


_ORGANS = {"liver": _liver_scene, "kidney": _kidney, "spleen": _spleen,
           "gallbladder": _gallbladder, "bladder": _bladder, "pancreas": _pancreas}


def _organ(c, name):
    _ORGANS[name](c)
    return {}


def _ovary(c, name=None):
    """Adnexal mass: cystic (bright septa), solid (small cystic spaces) or mixed, with a bright wall; a normal
    follicle-bearing ovary next to it as a distractor half of the time."""
    c.echo[:] = 0.55
    a = c.uni(0.14, 0.22)
    cx, cy = c.place(a, xr=(0.35, 0.65), yr=(0.45, 0.6))
    if c.chance(0.5):
        ox = cx + (-1 if cx > 0.5 else 1) * (a + 0.12)
        c.fill(c.ellipse(ox, cy - 0.05, 0.1, 0.07) < 1, 0.85)
        for _ in range(3):
            c.fill(c.ellipse(ox + c.uni(-0.05, 0.05), cy - 0.05 + c.uni(-0.03, 0.03), 0.02, 0.02) < 1, FLUID)
    b, ang = a * c.uni(0.7, 1.0), c.uni(-0.5, 0.5)
    r = c.ellipse(cx, cy, a, b, ang)
    c.fill(r < 1, 2.0, "tumor")
    inner = r < 1 - 0.022 / b
    kind = int(c.rng.integers(3))
    if kind == 1:
        c.fill(inner, 1.3)
        for _ in range(3):
            c.fill(inner & (c.ellipse(cx + c.uni(-0.5, 0.5) * a, cy + c.uni(-0.5, 0.5) * b, 0.03, 0.025) < 1), 0.2)
    else:
        c.fill(inner & ((c.frame(cx, cy, ang)[1] < 0) if kind == 2 else True), FLUID)
        if kind == 2:
            c.fill(inner & (c.frame(cx, cy, ang)[1] >= 0), 1.3)
        for _ in range(int(c.rng.integers(1, 4))):
            t = c.uni(0, math.pi)
            p = (cx - a * math.cos(t), cy - a * math.sin(t)), (cx + a * math.cos(t), cy + a * math.sin(t))
            c.fill(inner & (c.segment(*p, reach=0.02) < 0.007), 2.4)
        c.shadow(r < 1, 1.5)
    return {}


def _uterus(c, name=None):
    """Uterus with a bright endometrial stripe and one hypoechoic, whorled fibroid (bright pseudocapsule,
    edge shadows)."""
    c.echo[:] = 0.35
    ua, ub, uang = c.uni(0.28, 0.34), c.uni(0.16, 0.2), c.uni(-0.35, 0.35)
    ux, uy = c.uni(0.44, 0.56), c.uni(0.48, 0.56)
    c.fill(c.ellipse(ux, uy, ua, ub, uang) < 1, 1.2)
    c.fill(c.ellipse(ux, uy, 0.7 * ua, 0.2 * ub, uang) < 1, 2.4)
    fa = c.uni(0.07, 0.12)
    s, t = c.uni(-0.6, 0.6) * ua, c.uni(-0.8, 0.8) * ub
    fx, fy = ux + s * math.cos(uang) - t * math.sin(uang), uy + s * math.sin(uang) + t * math.cos(uang)
    r = c.ellipse(fx, fy, fa, fa * c.uni(0.85, 1.05), c.uni(0, math.pi))
    fibroid = r < 1
    c.fill(fibroid, np.where(r > 1 - 0.015 / fa, 2.2, np.where(np.sin(2 * np.pi * 2.5 * r) > 0, 0.4, 0.1)).astype(np.float32))
    c.shadow(fibroid & (np.abs(c.gx - fx) > 0.7 * fa), 0.4)
    return {"fibroid": fibroid}


def _spinal_cord(c, name=None):
    """Sagittal spinal cord (linear probe): hypoechoic cord with bright pia and central echo in anechoic
    CSF inside the bright dura; the injury is a hyperechoic irregular focus confined to the cord."""
    c.echo[:] = 0.5
    yc, tilt, h = c.uni(0.42, 0.56), c.uni(-0.12, 0.12), c.uni(0.075, 0.1)
    f, p = c.uni(1.0, 2.0), c.uni(0, 6.3)
    centre = lambda x: yc + tilt * (x - 0.5) + 0.015 * np.sin(2 * np.pi * f * x + p)
    d = np.abs(c.gy - centre(c.gx))
    csf = h + c.uni(0.04, 0.06)
    c.fill(d < csf + 0.018, 3.0)
    c.fill(d < csf, FLUID)
    c.fill(d < h + 0.008, 2.2)
    c.fill(d < h, 0.3)
    c.fill(d < 0.006, 1.6)
    body = (c.gy > centre(c.gx) + csf + 0.08) & (np.sin(2 * np.pi * c.gx / 0.3 + p) > -0.6)
    c.fill(body & (c.gy < centre(c.gx) + csf + 0.1), 2.5)
    c.shadow(body & (c.gy < centre(c.gx) + csf + 0.1), 0.25)
    ix = c.uni(0.2, 0.8)
    iy = float(centre(ix)) + c.uni(-0.3, 0.3) * h
    r = c.ellipse(ix, iy, c.uni(0.06, 0.14), c.uni(0.6, 1.0) * h, c.uni(-0.2, 0.2), c.irregular(0.12, 0.0))
    injury = (r < 1) & (d < h)
    c.fill(injury, 3.0)
    c.fill(injury & (r < 0.4), 0.9)
    return {"injury": injury}


@dataclass(frozen=True)
class _Anatomy:
    """How one task is drawn: a scene function, its probe, the parts its mask labels (part -> class),
    the geometry names that are its landmarks (regression), or the region that is its box (detection)."""

    draw: Callable
    probe: str
    parts: dict = field(default_factory=dict)
    points: tuple = ()
    box: str | None = None


# One entry per task: adding a task is adding an entry (and its sizes above).
_ANATOMY = {
    "FUGC": _Anatomy(_cervix, "convex", points=("internal_os", "external_os")),
    "IUGC": _Anatomy(_intrapartum, "convex", points=("symphysis_superior", "symphysis_inferior", "head_tangent")),
    "fetal_femur": _Anatomy(_femur, "convex", points=("femur_left_end", "femur_right_end")),
    "fetal_head_pos_cls": _Anatomy(_head_position, "convex"),
    "fetal_plane_cls": _Anatomy(_fetal_plane, "convex"),
    "fetal_sacral_pos_cls": _Anatomy(_sacral_position, "convex"),
    "cervix": _Anatomy(_cervix, "convex", {"anterior_lip": 1, "posterior_lip": 1}),
    "cervix_multi": _Anatomy(_cervix, "convex", {"anterior_lip": 1, "posterior_lip": 2}),
    "fetal_abdomen_multi": _Anatomy(_fetal_abdomen, "convex", {"abdomen": 1, "stomach": 2, "umbilical_vein": 3, "spine": 4}),
    "fetal_head": _Anatomy(_fetal_head, "convex", {"head": 1}),
    "fetal_heart": _Anatomy(_fetal_thorax, "convex", {"heart": 1}),
    "head_symphysis_multi": _Anatomy(_intrapartum, "convex", {"symphysis": 1, "head": 2}),
    "breast_2cls": _Anatomy(_breast, "linear"),
    "breast_3cls": _Anatomy(_breast, "linear"),
    "breast_lesion": _Anatomy(_breast, "linear", {"lesion": 1}),
    "lung_2cls": _Anatomy(_lung, "convex"),
    "lung_disease_3cls": _Anatomy(_lung, "convex"),
    "lung": _Anatomy(_lung, "convex", {"lung": 1}),
    "thyroid_nodule_det": _Anatomy(_thyroid, "linear", box="nodule"),
    "thyroid_nodule": _Anatomy(_thyroid, "linear", {"nodule": 1}),
    "cardiac_multi": _Anatomy(_cardiac, "phased", {"lv": 1, "myo": 2, "la": 3}),
    "carotid_artery": _Anatomy(_carotid, "linear", {"vessel": 1}),
    "liver_lesion_2cls": _Anatomy(_liver, "convex"),
    "organ_cls": _Anatomy(_organ, "convex"),
    "ovary_tumor": _Anatomy(_ovary, "convex", {"tumor": 1}),
    "uterine_fibroid_det": _Anatomy(_uterus, "convex", box="fibroid"),
    "spinal_cord_injury_loc": _Anatomy(_spinal_cord, "linear", box="injury"),
}


# -------------------------------------------------------------------------------------------------- suite


def _task_spec(task) -> TaskSpec:
    """The registry spec for a task id (or a TaskSpec with a registry id)."""
    tid = task.id if isinstance(task, TaskSpec) else task
    if tid not in _TASK_POS:
        raise ValueError(f"unknown synthetic task {tid!r}; valid: {', '.join(_TASK_POS)}")
    return (FMC_UIA_TASKS + EXTRA_TASKS)[_TASK_POS[tid]]


def _anatomy(spec) -> _Anatomy:
    """How a task is drawn: its entry above, or for an extra task (`EXTRA_TASKS`) its type's `synthetic_scene`."""
    entry = _ANATOMY.get(spec.id)
    return entry if entry is not None else _Anatomy(*training_task_type(spec).synthetic_scene(spec))


def _train_size(spec) -> int:
    return TRAIN_SIZES[spec.id] if spec.id in TRAIN_SIZES else training_task_type(spec).synthetic_train_size


# The label keys of an example: every task type's (None where the task's type has no such label).
EXAMPLE_LABEL_FIELDS = tuple(name for kind in TRAINING_TASK_TYPES.values() for name in kind.example_features)


class SyntheticUltrasoundSuite:
    """The 27 FMC_UIA tasks as a deterministic synthetic suite.

    Every example is a pure function of (seed, task, split, index): `example()` regenerates any one alone,
    in any order and in any process. `scale` multiplies the per-task sizes (TRAIN_SIZES); every split
    keeps at least MIN_EXAMPLES examples and, for classification, two examples of every class.
    """

    def __init__(self, scale: float = 1.0, image_size: int = 224, seed: int = 0, tasks=None):
        if not isinstance(image_size, (int, np.integer)) or image_size % 16 or image_size < 32:
            raise ValueError(f"image_size must be a multiple of 16 (the ViT patch size) and at least 32, got {image_size!r}")
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale!r}")
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.scale, self.image_size, self.seed = float(scale), int(image_size), int(seed)
        chosen = {_task_spec(t).id for t in (tasks if tasks is not None else FMC_UIA_TASKS)}
        self.tasks: list[TaskSpec] = [t for t in FMC_UIA_TASKS + EXTRA_TASKS if t.id in chosen]  # registry order

    def __repr__(self):
        return f"SyntheticUltrasoundSuite(scale={self.scale}, image_size={self.image_size}, seed={self.seed}, tasks={len(self.tasks)})"

    @property
    def task_ids(self) -> list[str]:
        return [t.id for t in self.tasks]

    def split_sizes(self, task) -> dict[str, int]:
        """{'train': n, 'val': m, 'test': m} for one task at this scale."""
        spec = _task_spec(task)
        floor = max(MIN_EXAMPLES, 2 * spec.num_classes) if training_task_type(spec).class_per_image else MIN_EXAMPLES
        train = max(floor, int(round(_train_size(spec) * self.scale)))
        val = max(floor, int(round(VAL_FRACTION * train)))
        return {"train": train, "val": val, "test": val}

    def size(self, task, split: str) -> int:
        return self.split_sizes(task)[_check_split(split)]

    def class_of(self, task, split: str, index: int) -> int:
        """Class of a classification example: the first 2K indices cycle through the K classes (so every
        split holds two of each), later ones follow CLASS_WEIGHTS along a golden-ratio sequence."""
        spec = _task_spec(task)
        k = spec.num_classes
        if index < 2 * k:
            return index % k
        w = np.asarray(CLASS_WEIGHTS.get(spec.id, (1,) * k), np.float64)
        t = (index * 0.6180339887498949 + 0.37 * _SPLIT_CODE[split]) % 1.0
        return min(k - 1, int(np.searchsorted(np.cumsum(w) / w.sum(), t, side="right")))

    def example(self, task, split: str, index: int) -> dict:
        """One example: {image, task, label, mask, boxes, class_labels, points} (see the module docstring)."""
        spec = _task_spec(task)
        entry, n = _anatomy(spec), self.image_size
        label, canvas, geometry, image = self._draw(spec, split, index, entry.parts)
        fov = _fov_raster(n, entry.probe, _STYLES[spec.group].atten_db)[0]
        out = {"image": image, "task": spec.id, **dict.fromkeys(EXAMPLE_LABEL_FIELDS)}
        if label is not None:
            out["label"] = label
        out.update(training_task_type(spec).synthetic_labels(spec, entry, canvas.mask, geometry, fov, n))
        return out

    def _draw(self, spec, split, index, parts):
        """(label, canvas, geometry, image) of one example, with `parts` (part name -> class) in its mask."""
        n_split = self.size(spec, split)
        if not 0 <= index < n_split:
            raise IndexError(f"{spec.id}/{split}: index {index} out of range [0, {n_split})")
        entry = _anatomy(spec)
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, _TASK_KEY[spec.id], _SPLIT_CODE[split], int(index)]))
        label = self.class_of(spec, split, index) if training_task_type(spec).class_per_image else None
        canvas = _Canvas(self.image_size, rng, entry.probe, spec, parts)
        geometry = entry.draw(canvas, spec.labels[label] if label is not None else None) or {}
        return label, canvas, geometry, _render(canvas, _STYLES[spec.group])

    def part_mask(self, task, split: str, index: int, part: str) -> np.ndarray:
        """Boolean (H, W) mask of one named part of an example's scene (e.g. the `lesion` of a classification
        example, which labels nothing), inside the field of view: for checks of the cues that decide labels.
        The example itself is unchanged: its image is `example(task, split, index)["image"]`."""
        spec = _task_spec(task)
        _, canvas, _, _ = self._draw(spec, split, index, {part: 1})
        fov = _fov_raster(self.image_size, _anatomy(spec).probe, _STYLES[spec.group].atten_db)[0]
        return (canvas.mask == 1) & fov

    def examples(self, split: str, tasks=None):
        """All examples of a split, task by task (registry order), index by index."""
        for spec in self._select(tasks):
            for i in range(self.size(spec, split)):
                yield self.example(spec, split, i)

    def dataset(self, split: str, tasks=None) -> "SyntheticDataset":
        """A map-style dataset over the chosen tasks (default: all of the suite's), interleaved."""
        return SyntheticDataset(self, _check_split(split), self._select(tasks))

    def to_hf_dataset(self, split: str, tasks=None):
        """The split as a `datasets.Dataset` (images and masks as Image features; None where N/A)."""
        import datasets

        feats = datasets.Features({
            "image": datasets.Image(), "task": datasets.Value("string"),
            **{name: feature(datasets) for kind in TRAINING_TASK_TYPES.values() for name, feature in kind.example_features.items()},
        })

        def rows(suite, split, ids, code):
            for ex in suite.examples(split, ids):
                yield {k: (v.tolist() if isinstance(v, np.ndarray) and k not in ("image", "mask") else v) for k, v in ex.items()}

        # The generator's fingerprint (datasets' cache key) must change whenever the drawing code does.
        code = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()
        return datasets.Dataset.from_generator(rows, features=feats, gen_kwargs={
            "suite": self, "split": _check_split(split), "ids": [t.id for t in self._select(tasks)], "code": code})

    def benchmark(self, n: int = 200, split: str = "train") -> float:
        """Generation speed in images per second, over n examples drawn across all the suite's tasks."""
        ds = self.dataset(split)
        ds[0]  # warm the field-of-view caches
        start = time.perf_counter()
        for k in range(n):
            ds[(k * 7919) % len(ds)]
        return n / (time.perf_counter() - start)

    def write_challenge_layout(self, out_dir, splits=("train", "val"), overwrite=False, grid=True) -> Path:
        """Write the suite in the challenge's on-disk layout (see `write_challenge_layout`)."""
        return write_challenge_layout(out_dir, splits, suite=self, overwrite=overwrite, grid=grid)

    def _select(self, tasks):
        if tasks is None:
            return list(self.tasks)
        ids = {_task_spec(t).id for t in ([tasks] if isinstance(tasks, (str, TaskSpec)) else tasks)}
        missing = ids - set(self.task_ids)
        if missing:
            raise ValueError(f"tasks {sorted(missing)} are not in this suite ({len(self.tasks)} tasks)")
        return [t for t in self.tasks if t.id in ids]


def _check_split(split):
    if split not in _SPLIT_CODE:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    return split


class SyntheticDataset:
    """Map-style dataset (len, getitem -> example dict), generated on the fly; usable by a DataLoader.

    Order: every task's examples are spread evenly over the dataset. Index k is the k-th (task, i) pair
    sorted by (i + 0.5) / n_task, ties in registry order, so any window of consecutive indices is a
    size-proportional mix of tasks and each task's examples appear in increasing i.

    Drawn examples are kept in memory up to `cache_bytes` (their arrays' sizes), since training draws each
    example once per epoch and drawing costs more than the model's step on small images; every access
    returns fresh copies of the arrays, so a caller that edits one in place changes nothing here. A
    DataLoader worker holds its own cache, which lives only as long as the worker.
    """

    def __init__(self, suite, split, tasks, cache_bytes: int = 256 * 2**20):
        self.suite, self.split, self.tasks = suite, split, list(tasks)
        self.cache_bytes, self._cache, self._cached_bytes = cache_bytes, {}, 0
        sizes = [suite.size(t, split) for t in self.tasks]
        pos = np.concatenate([(np.arange(n) + 0.5) / n for n in sizes])
        which = np.concatenate([np.full(n, k) for k, n in enumerate(sizes)])
        local = np.concatenate([np.arange(n) for n in sizes])
        order = np.lexsort((which, pos))
        self.task_index, self.example_index = which[order], local[order]

    def __len__(self):
        return len(self.task_index)

    def locate(self, k: int) -> tuple[str, int]:
        """(task id, index within the task) of dataset index k."""
        if not -len(self) <= k < len(self):
            raise IndexError(f"index {k} out of range for a dataset of {len(self)}")
        return self.tasks[self.task_index[k]].id, int(self.example_index[k])

    def task_of(self, k: int) -> str:
        return self.locate(k)[0]

    def __getitem__(self, k):
        tid, i = self.locate(int(k))
        example = self._cache.get((tid, i))
        if example is None:
            example = self.suite.example(tid, self.split, i)
            size = sum(v.nbytes for v in example.values() if isinstance(v, np.ndarray))
            if self._cached_bytes + size <= self.cache_bytes:
                self._cache[(tid, i)] = example
                self._cached_bytes += size
        return {key: value.copy() if isinstance(value, np.ndarray) else value for key, value in example.items()}


# ------------------------------------------------------------------------------------------ on-disk layout

_MAX_POINTS = max(t.num_points or 0 for t in FMC_UIA_TASKS)
CSV_COLUMNS = (["image_path", "mask_path", "task_id", "task_name", "mask", "num_classes"]
               + [f"point_{p + 1}_xy" for p in range(_MAX_POINTS)] + ["x_min", "y_min", "x_max", "y_max"])


def _save_png(path, array):
    from PIL import Image

    Image.fromarray(array).save(path, compress_level=1)


def _save_file(root, rel_path, array) -> str:
    """Saves a label file (a mask) of the layout under `root`; returns its CSV path."""
    (root / rel_path).parent.mkdir(parents=True, exist_ok=True)
    _save_png(root / rel_path, array)
    return f"../{Path(rel_path).as_posix()}"


def _write_split(suite, root, split):
    """Images, masks and one CSV per task type for one split; returns the number of examples written."""
    rows = {}
    for spec in suite.tasks:
        kind = training_task_type(spec)
        folder = Path(kind.layout_folder(spec))
        (root / folder / "images").mkdir(parents=True)
        for i in range(suite.size(spec, split)):
            ex = suite.example(spec, split, i)
            image = ex["image"]
            if i % 8 == 5:  # a few RGB files, as the challenge has both
                image = np.repeat(image[:, :, None], 3, axis=2)
            rel = folder / "images" / f"{i:06d}.png"
            _save_png(root / rel, image)
            row = dict.fromkeys(CSV_COLUMNS, "")
            row.update(image_path=f"../{rel.as_posix()}", task_id=spec.id, task_name=TASK_TYPES[spec.type].csv_name,
                       num_classes=str(kind.csv_count(spec)))
            row.update(kind.layout_cells(spec, ex, folder, i, lambda rel_path, array: _save_file(root, rel_path, array)))
            rows.setdefault(spec.type, []).append(row)
    (root / "csv_files").mkdir(parents=True)
    for kind, kind_rows in rows.items():
        with open(root / "csv_files" / f"synthetic_{kind}.csv", "w", newline="", encoding="utf-8") as fh:
            extra = [c for spec in suite.tasks for c in training_task_type(spec).csv_columns(spec) if c not in CSV_COLUMNS]
            writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS + list(dict.fromkeys(extra)))
            writer.writeheader()
            writer.writerows(kind_rows)
    return sum(len(r) for r in rows.values())


def write_challenge_layout(out_dir, splits=("train", "val"), suite=None, overwrite=False, grid=True,
                           **suite_kwargs) -> Path:
    """Write a suite in the challenge layout: `<out>/<split>/csv_files/synthetic_<type>.csv` (one CSV per
    task type, all with CSV_COLUMNS), `Classification/<task>/images`, `Segmentation/{Two..Five}/<task>/
    {images,masks}`, `Detection/<task>/images`, `Regression/<task>/images`, plus `<out>/suite_grid.png`.

    Writes into a temporary sibling folder and renames it into place at the end, so a crash leaves no
    half-written layout; refuses a non-empty `out_dir` unless `overwrite`.
    """
    suite = suite or SyntheticUltrasoundSuite(**suite_kwargs)
    out = Path(out_dir).resolve()
    for split in splits:
        _check_split(split)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty; pass overwrite=True (--overwrite) to replace it")
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        for split in splits:
            _write_split(suite, tmp / split, split)
        if grid:
            save_grid(suite, tmp / "suite_grid.png", split=splits[0])
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def save_grid(suite, path, split="train", cols=7):
    """A PNG grid with one example of every task and its label drawn on it (mask, box, points, class)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    rows = -(-len(suite.tasks) // cols)
    fig = Figure(figsize=(2.3 * cols, 2.6 * rows))
    FigureCanvasAgg(fig)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    colours = ListedColormap(["#00000000", "#ff3b30", "#34c759", "#0a84ff", "#ffcc00"])
    for k, (ax, spec) in enumerate(zip(axes, suite.tasks)):
        ex = suite.example(spec, split, (3 * k + 1) % suite.size(spec, split))
        ax.imshow(ex["image"], cmap="gray", vmin=0, vmax=255)
        caption = spec.type
        if ex["mask"] is not None:
            ax.imshow(np.ma.masked_equal(ex["mask"], 0), cmap=colours, vmin=0, vmax=4, alpha=0.45, interpolation="nearest")
            caption = "mask: " + ", ".join(spec.labels[1:])
        if ex["label"] is not None:
            caption = f"class: {spec.labels[ex['label']]}"
        if ex["boxes"] is not None:
            x0, y0, x1, y1 = ex["boxes"][0]
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec="#ffcc00", lw=1.5))
            caption = f"box: {spec.labels[0]}"
        if ex["points"] is not None:
            pts = ex["points"] - 0.5  # imshow puts pixel centres at integers
            ax.scatter(pts[:, 0], pts[:, 1], s=22, c="#ff3b30", edgecolors="white", linewidths=0.6)
            for p, (x, y) in enumerate(pts):
                ax.annotate(str(p + 1), (x, y), xytext=(3, 3), textcoords="offset points", color="#ffcc00", fontsize=7)
            caption = "points: " + ", ".join(spec.labels)
        ax.set_title(spec.id + "\n" + textwrap.fill(caption, 44), fontsize=6.5)
    for ax in axes:
        ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return Path(path)


def main(argv=None) -> int:
    """m2dino-synth: write the synthetic suite in the challenge layout, with a preview grid."""
    parser = argparse.ArgumentParser(prog="m2dino-synth", description=main.__doc__)
    parser.add_argument("--out", required=True, help="output folder (must be empty or absent, unless --overwrite)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies the per-task sizes (default 1.0)")
    parser.add_argument("--image-size", type=int, default=224, help="pixels, a multiple of 16 (default 224)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--splits", nargs="+", default=["train", "val"], choices=SPLITS)
    parser.add_argument("--tasks", nargs="+", default=None, help="task ids (default: all 27)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    args = parser.parse_args(argv)
    try:
        suite = SyntheticUltrasoundSuite(args.scale, args.image_size, args.seed, args.tasks)
    except ValueError as err:
        parser.error(str(err))
    total = sum(suite.size(t, s) for t in suite.tasks for s in args.splits)
    start = time.perf_counter()
    try:
        out = write_challenge_layout(args.out, args.splits, suite=suite, overwrite=args.overwrite)
    except FileExistsError as err:
        parser.error(str(err))
    seconds = time.perf_counter() - start
    print(f"wrote {total} examples of {len(suite.tasks)} tasks ({', '.join(args.splits)}) to {out} "
          f"in {seconds:.1f} s ({total / seconds:.0f} images/s incl. PNG writing); preview: {out / 'suite_grid.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
