"""The B-mode renderer of the synthetic suite: a canvas the anatomy scenes paint echogenicity into, and the
scanner's image formation that turns it into speckle.

A scene paints an echogenicity map (and the task's class mask) on a `Canvas`; `render` turns the map into
speckle the way a scanner does it: random scatterers weighted by the echogenicity, convolved with the pulse's
point-spread function, envelope-detected as the magnitude of the complex (I/Q) signal, attenuated with depth
and log-compressed, inside a convex, phased or linear field of view. Each clinical group has its own look
(`GROUP_STYLES`). Coordinates are normalised: the image spans [0, 1] x [0, 1], y grows with depth.
"""

import math
from collections import namedtuple
from functools import lru_cache

import numpy as np
from scipy import ndimage


# A clinical group's look, shared by all its tasks: display gain, net depth attenuation, speckle grain
# (PSF sigmas, axial and lateral, in pixels at 224 px) and low-frequency tissue heterogeneity.
GroupStyle = namedtuple("GroupStyle", "gain_db atten_db psf texture")

GROUP_STYLES = {
    "obstetrics": GroupStyle(0.0, 9.0, (0.9, 1.7), 0.25),
    "breast": GroupStyle(3.0, 6.0, (0.7, 1.2), 0.3),
    "lung": GroupStyle(-1.0, 8.0, (1.1, 2.0), 0.2),
    "thyroid": GroupStyle(2.0, 5.0, (0.7, 1.1), 0.2),
    "cardiovascular": GroupStyle(-2.0, 7.0, (1.0, 1.9), 0.25),
    "abdomen": GroupStyle(1.0, 10.0, (1.0, 1.8), 0.2),
    "gynecology": GroupStyle(0.0, 8.0, (0.9, 1.6), 0.3),
    "spine": GroupStyle(2.0, 5.0, (0.7, 1.2), 0.25),
}
_DYNAMIC_RANGE_DB, _TOP_DB = 50.0, 24.0  # E = 1 speckle maps to grey ~120

# Fields of view in normalised image coordinates. Sector: apex, first and last radius, half-angle.
_PROBES = {
    "convex": ("sector", (0.5, -0.35), 0.40, 1.32, math.radians(33)),
    "phased": ("sector", (0.5, 0.02), 0.0, 0.95, math.radians(40)),
    "linear": ("linear", (0.03, 0.97), (0.02, 1.0)),
}


def field_of_view_at(probe, x, y):
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
def field_of_view_raster(n, probe, atten_db):
    """Field-of-view mask and the attenuation gain map (zero outside), cached per size and probe."""
    g = (np.arange(n, dtype=np.float32) + 0.5) / n
    inside, depth = field_of_view_at(probe, g[None, :], g[:, None])
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


class Canvas:
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
            if field_of_view_at(self.probe, px, py)[0].all() and px.min() > 0 and px.max() < 1 and py.max() < 1:
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


def render(c, style):
    """Echogenicity -> B-mode: scatterers x echo, PSF, |I + iQ| envelope, attenuation, log compression.

    Simulated at baseband: the carrier of the RF pulse drops out of the envelope, so complex Gaussian
    scatterers convolved with the pulse's Gaussian envelope give the same Rayleigh speckle as RF + Hilbert.
    """
    n = c.n
    fov, gain = field_of_view_raster(n, c.probe, style.atten_db)
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

