"""The anatomy scenes of the synthetic suite: one drawing per task, and the table that says how each task is drawn.

Each scene function paints one view into a `Canvas` (renderer.py) and returns its named geometry: landmarks
in normalised coordinates, regions as boolean arrays. Its second argument is the example's class name
(classification tasks) or None. `TASK_SCENES` pairs every challenge task with its scene, its probe and what its
labels are made of: the parts its mask labels, the landmarks it regresses or the region that is its box.
Tasks of one clinical group share anatomy (so transfer can help), and some cues mean opposite things in
different groups (so it can hurt): docs/synthetic.md, "Transfer by design".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

# Echogenicity (amplitude reflectivity; 1.0 = average soft tissue, displayed mid-grey).
FLUID, BRAIN, SOFT, BONE = 0.03, 0.35, 0.7, 4.0


def obstetric_scene(c):
    """Maternal abdominal wall over an amniotic-fluid pool: the backdrop every fetal view shares."""
    c.echo[:] = 0.6
    c.fill(c.layer(c.uni(0.08, 0.12), 0.014, c.uni(-0.06, 0.06), 0.01, c.uni(0, 6.3)), 1.8)
    c.fill(c.ellipse(0.5 + c.uni(-0.04, 0.04), 0.62, c.uni(0.52, 0.6), c.uni(0.4, 0.45)) < 1, FLUID)


def skull(c, cx, cy, a, b, ang, part="head"):
    """Fetal head: dim brain, bright skull ring (constant thickness in image units), midline echo."""
    r = c.ellipse(cx, cy, a, b, ang)
    c.fill(r < 1, BRAIN, part)
    c.fill((r < 1) & (r > 1 - 0.032 / b), BONE)
    d = (0.8 * a * math.cos(ang), 0.8 * a * math.sin(ang))
    c.fill(c.segment((cx - d[0], cy - d[1]), (cx + d[0], cy + d[1])) < 0.007, 1.6)


def _fetal_head(c, name=None):
    obstetric_scene(c)
    a = c.uni(0.17, 0.26)
    cx, cy = c.place(a, yr=(0.42, 0.65))
    skull(c, cx, cy, a, a * c.uni(0.74, 0.88), c.uni(0, math.pi))
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
    obstetric_scene(c)
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
    skull(c, cx, cy, a, b, th)
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
    obstetric_scene(c)
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
    obstetric_scene(c)
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
    obstetric_scene(c)
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
    obstetric_scene(c)
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
    skull(c, hx, hy, a, b, hang, part="head")
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
    obstetric_scene(c)
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
class TaskScene:
    """How one task is drawn: a scene function, its probe, the parts its mask labels (part -> class),
    the geometry names that are its landmarks (regression), or the region that is its box (detection)."""

    draw: Callable
    probe: str
    parts: dict = field(default_factory=dict)
    points: tuple = ()
    box: str | None = None


# One entry per task: adding a task is adding an entry here (and its size to `TRAIN_SIZES` in suite.py).
TASK_SCENES = {
    "FUGC": TaskScene(_cervix, "convex", points=("internal_os", "external_os")),
    "IUGC": TaskScene(_intrapartum, "convex", points=("symphysis_superior", "symphysis_inferior", "head_tangent")),
    "fetal_femur": TaskScene(_femur, "convex", points=("femur_left_end", "femur_right_end")),
    "fetal_head_pos_cls": TaskScene(_head_position, "convex"),
    "fetal_plane_cls": TaskScene(_fetal_plane, "convex"),
    "fetal_sacral_pos_cls": TaskScene(_sacral_position, "convex"),
    "cervix": TaskScene(_cervix, "convex", {"anterior_lip": 1, "posterior_lip": 1}),
    "cervix_multi": TaskScene(_cervix, "convex", {"anterior_lip": 1, "posterior_lip": 2}),
    "fetal_abdomen_multi": TaskScene(_fetal_abdomen, "convex", {"abdomen": 1, "stomach": 2, "umbilical_vein": 3, "spine": 4}),
    "fetal_head": TaskScene(_fetal_head, "convex", {"head": 1}),
    "fetal_heart": TaskScene(_fetal_thorax, "convex", {"heart": 1}),
    "head_symphysis_multi": TaskScene(_intrapartum, "convex", {"symphysis": 1, "head": 2}),
    "breast_2cls": TaskScene(_breast, "linear"),
    "breast_3cls": TaskScene(_breast, "linear"),
    "breast_lesion": TaskScene(_breast, "linear", {"lesion": 1}),
    "lung_2cls": TaskScene(_lung, "convex"),
    "lung_disease_3cls": TaskScene(_lung, "convex"),
    "lung": TaskScene(_lung, "convex", {"lung": 1}),
    "thyroid_nodule_det": TaskScene(_thyroid, "linear", box="nodule"),
    "thyroid_nodule": TaskScene(_thyroid, "linear", {"nodule": 1}),
    "cardiac_multi": TaskScene(_cardiac, "phased", {"lv": 1, "myo": 2, "la": 3}),
    "carotid_artery": TaskScene(_carotid, "linear", {"vessel": 1}),
    "liver_lesion_2cls": TaskScene(_liver, "convex"),
    "organ_cls": TaskScene(_organ, "convex"),
    "ovary_tumor": TaskScene(_ovary, "convex", {"tumor": 1}),
    "uterine_fibroid_det": TaskScene(_uterus, "convex", box="fibroid"),
    "spinal_cord_injury_loc": TaskScene(_spinal_cord, "linear", box="injury"),
}

