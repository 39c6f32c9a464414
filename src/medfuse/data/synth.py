"""Built-in ``synth-derm`` dataset: synthetic lesion images + patient metadata + a clinical note.

The label depends on all three modalities, so no single one can match a fused
model (see :data:`SYNTH_DERM_GROUND_TRUTH`). Generation is seeded and fast.
With ``findings=True`` (the ``synth-derm-findings`` built-in) three 0/1 finding columns
are added, each visible in one modality only (:data:`SYNTH_DERM_FINDINGS_GROUND_TRUTH`).

>>> import tempfile
>>> folder = tempfile.mkdtemp()
>>> df = make_synth_derm(folder, n_rows=40, image_size=32, seed=0)
>>> df.to_csv(f"{folder}/data.csv", index=False)
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from medfuse.errors import ConfigError

SYNTH_DERM_TABULAR = {"age": "continuous", "sex": "categorical", "site": "categorical"}

SYNTH_DERM_GROUND_TRUTH = (
    "label = 1 (malignant) iff image + tabular + text + noise > 0, each evidence ~unit variance. "
    "image = mean(logit(irregularity), logit(variegation), logit(darkness)) / 1.35, the lesion's "
    "border irregularity/asymmetry, colour variegation and darkness in (0, 1); "
    "tabular = (0.8 * (age - 52) / 17 + site weight + (+0.3 male / -0.3 female)) / 0.93 with site "
    "weights head/neck +0.5, torso +0.2, upper extremity -0.3, lower extremity -0.1, palms/soles "
    "-0.8 (centred); text = sum of cue weights in the note / 1.5 (grown +1.0, bleeding +1.2, "
    "itching +0.7, colour change +1.0, stable -1.0, since childhood -1.1, unchanged -0.9); "
    "noise = patient effect N(0, 0.45^2) + lesion effect N(0, 0.55^2)."
)

SYNTH_DERM_FINDINGS = ("halo", "sun_damage", "family_history")

SYNTH_DERM_FINDINGS_GROUND_TRUTH = (
    "three 0/1 findings, independent of each other, each seen by one modality only (halo and "
    "family_history are independent of the label too; sun_damage shares its age and site, r "
    "~0.26); drawn from their own random stream (seed, 1), so the other "
    "columns equal synth-derm's for the same seed except that a halo is drawn in the image and "
    "a family-history clause is appended to the note. "
    "halo (image): a depigmented ring around the lesion (outer radius 1.3-1.65 x the lesion's, "
    "strength 0.45-0.9 towards a pale colour), present with p 0.25; the label is the presence "
    "flipped with p 0.06 (prevalence ~0.28). "
    "sun_damage (tabular): 1.1 * (age - 52) / 17 + site weight + N(0, 0.6^2) > 0.75, site "
    "weights head/neck +1.2, upper extremity +0.6, torso -0.1, lower extremity -0.2, "
    "palms/soles -1.2 (prevalence ~0.3). "
    "family_history (text): p 0.22; a family-history clause ('family history of melanoma', "
    "...) is appended to the note of 85 % of positives and 4 % of negatives, and 'no family "
    "history of ...' to 15 % of the rest."
)

SITES = ("head/neck", "torso", "upper extremity", "lower extremity", "palms/soles")
_SITE_P = np.array([0.15, 0.35, 0.2, 0.2, 0.1])
_SITE_W = np.array([0.5, 0.2, -0.3, -0.1, -0.8])
_SITE_W = _SITE_W - float(_SITE_P @ _SITE_W)
_CUES: dict[str, tuple[float, tuple[str, ...]]] = {
    "grown": (1.0, ("lesion has grown", "the mole is getting bigger", "the spot has enlarged")),
    "bleeding": (1.2, ("it bleeds at times", "lesion was bleeding", "some bleeding on contact")),
    "itching": (0.7, ("it itches", "itching at the site", "the lesion is itchy")),
    "colour": (1.0, ("it has changed colour", "it has become darker", "new colours appeared")),
    "stable": (-1.0, ("it looks stable", "stable for many years", "no recent change in size")),
    "childhood": (-1.1, ("present since childhood", "had it since birth", "a longstanding mole")),
    "unchanged": (-0.9, ("unchanged since last visit", "size and shape unchanged",
                         "same as in old photos")),
}
_POS = [k for k, (w, _) in _CUES.items() if w > 0]
_NEG = [k for k, (w, _) in _CUES.items() if w < 0]
_OPENERS = ("patient reports", "pt reports", "patient states", "on review,", "partner noticed",
            "referred by GP:", "self-referral;")
_FILLERS = ("", "", "", "; otherwise well", "; no other concerns", "; wants it checked",
            "; takes no regular medication", "; first visit to this clinic")
_NO_CUE = ("routine skin check, no specific complaint", "incidental finding at skin check")
_TEXT_MEAN, _TEXT_SD = 0.0, 1.5
_SKIN = np.array([[240.0, 205.0, 185.0], [205.0, 160.0, 130.0]])
_LESION = np.array([[165.0, 110.0, 75.0], [65.0, 40.0, 28.0]])
_HALO = np.array([250.0, 240.0, 232.0])  # depigmented skin
_SUN_W = np.array([1.2, -0.1, 0.6, -0.2, -1.2])  # by SITES
_FAMILY = ("family history of melanoma", "mother had a melanoma removed",
           "father treated for melanoma", "sister had skin cancer")
_NO_FAMILY = ("no family history of skin cancer", "no family history of melanoma")
_PALETTE = np.array([[30.0, 22.0, 22.0], [100.0, 105.0, 125.0], [150.0, 75.0, 60.0],
                     [90.0, 52.0, 32.0], [160.0, 115.0, 80.0]])


def _check_int(name: str, value: object, lo: int, hi: int | None) -> int:
    """Return ``value`` as an int, or raise :class:`ConfigError` naming it and its valid range."""
    if (
        isinstance(value, (int, np.integer))
        and not isinstance(value, bool)
        and lo <= value
        and (hi is None or value <= hi)
    ):
        return int(value)
    valid = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
    raise ConfigError(
        f"The '{name}' parameter of make_synth_derm must be an int {valid}. Got {value!r} instead."
    )


def _smooth_noise(rng: np.random.Generator, n: int, size: int, cells: int) -> np.ndarray:
    """``n`` smooth noise fields of shape (size, size): bilinear upsampling of a random grid."""
    g = rng.standard_normal((n, cells + 1, cells + 1))
    t = (np.arange(size) + 0.5) * cells / size
    i = np.minimum(t.astype(int), cells - 1)
    interp = np.zeros((size, cells + 1))  # bilinear interpolation matrix
    interp[np.arange(size), i] = 1 - (t - i)
    interp[np.arange(size), i + 1] = t - i
    return interp @ g @ interp.T


def _note(rng: np.random.Generator, z: float) -> tuple[str, float]:
    """A one-line note whose cues lean positive for large ``z``; returns (note, cue weight sum)."""
    n_cues = int(rng.choice(4, p=[0.08, 0.37, 0.37, 0.18]))
    n_pos = int(rng.binomial(n_cues, 1.0 / (1.0 + np.exp(-2.0 * z))))
    n_pos, n_neg = min(n_pos, len(_POS)), min(n_cues - n_pos, len(_NEG))
    cues = [*rng.choice(_POS, n_pos, replace=False), *rng.choice(_NEG, n_neg, replace=False)]
    cues = [cues[j] for j in rng.permutation(len(cues))]
    weight = float(sum(_CUES[c][0] for c in cues))
    phrases = [_CUES[c][1][int(rng.integers(3))] for c in cues]
    filler = _FILLERS[int(rng.integers(len(_FILLERS)))]
    if not phrases:
        return _NO_CUE[int(rng.integers(len(_NO_CUE)))] + filler, weight
    body = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    return f"{_OPENERS[int(rng.integers(len(_OPENERS)))]} {body}{filler}", weight


def _lesion_image(
    rng: np.random.Generator, size: int, skin: np.ndarray, irr: float, var: float, dark: float,
    halo: tuple[float, float] | None = None,
) -> tuple[np.ndarray, float, float, float]:
    """Render one RGB uint8 image; returns (image, centre x, centre y, mean radius) in pixels.

    ``halo`` = (strength, reach) draws a pale ring out to ``reach`` x the lesion's radius; it
    takes nothing from ``rng``, so the rest of the image is as without it.
    """
    n_ang = 256
    ang = np.linspace(0.0, 2 * np.pi, n_ang, endpoint=False)
    ks = np.arange(1, 13)
    amp = np.where(ks == 1, 0.12 * irr, 0.3 * irr**1.5 * rng.uniform(0.3, 1.0, 12) / ks**0.8)
    amp[1] = 0.0  # k=2 is the (benign) elliptical shape below
    phase = rng.uniform(0, 2 * np.pi, 12)
    harm = (amp[:, None] * np.cos(ks[:, None] * ang + phase[:, None])).sum(0)
    ell = rng.uniform(0.0, 0.2) * np.cos(2 * (ang - rng.uniform(0, np.pi)))
    r0 = rng.uniform(0.10, 0.19) * size
    radius = np.minimum(r0 * np.maximum((1 + ell) * (1 + harm), 0.35), 0.45 * size - 1.5)
    r_max = float(radius.max()) + 1.5
    cx, cy = rng.uniform(r_max, size - r_max, 2)
    coord = np.arange(size) + 0.5  # pixel i spans [i, i + 1): centres at i + 0.5
    b = min(size, int(np.ceil(2 * r_max)) + 2)  # the lesion's square bounding box
    x0, y0 = (int(np.clip(np.floor(c - r_max), 0, size - b)) for c in (cx, cy))
    dx, dy = coord[None, x0 : x0 + b] - cx, coord[y0 : y0 + b, None] - cy
    dist = np.hypot(dx, dy)
    r_pix = radius[(np.arctan2(dy, dx) * (n_ang / (2 * np.pi))).astype(int) % n_ang]
    soft = rng.uniform(0.6, 1.4) * max(size / 64.0, 0.5)
    alpha = np.clip((r_pix - dist) / soft + 0.5, 0.0, 1.0)[..., None]

    grad = rng.normal(0.0, 0.04, 2)
    light = (1 + 0.04 * _smooth_noise(rng, 1, size, 4)[0]
             + 0.03 * _smooth_noise(rng, 1, size, max(4, size // 6))[0]
             + grad[0] * (coord[None, :] / size - 0.5) + grad[1] * (coord[:, None] / size - 0.5))
    img = skin[None, None, :] * light[..., None]
    if halo is not None:  # on the skin, under the lesion
        hx, hy = coord[None, :] - cx, coord[:, None] - cy
        r_all = radius[(np.arctan2(hy, hx) * (n_ang / (2 * np.pi))).astype(int) % n_ang]
        ring = np.clip((halo[1] * r_all - np.hypot(hx, hy)) / (2 * soft) + 0.5, 0.0, 1.0)
        img += (halo[0] * ring)[..., None] * (_HALO - img)
    w = np.exp(2.5 * _smooth_noise(rng, len(_PALETTE), b, max(2, round(9 * b / size))))
    multi = ((w / w.sum(0)).reshape(len(_PALETTE), -1).T @ _PALETTE).reshape(b, b, 3)
    base = (1 - dark) * _LESION[0] + dark * _LESION[1]
    shade = (0.88 + 0.2 * np.clip(dist / np.maximum(r_pix, 1e-6), 0, 1))[..., None]
    box = img[y0 : y0 + b, x0 : x0 + b]  # a view: blend the lesion in place
    lesion = ((1 - var) * base + var * multi) * shade * light[y0 : y0 + b, x0 : x0 + b, None]
    box += alpha * (lesion - box)
    img += 3.5 * rng.standard_normal((size, size, 1))
    arr = np.clip(np.round(img), 0, 255).astype(np.uint8)
    return arr, float(cx), float(cy), float(radius.mean())


def _findings(
    rng: np.random.Generator, age: np.ndarray, site: np.ndarray
) -> tuple[dict[str, np.ndarray], list[tuple[float, float] | None], list[str]]:
    """The :data:`SYNTH_DERM_FINDINGS` columns, each row's halo (or None) and note clause."""
    n = len(age)
    present = rng.random(n) < 0.25
    strength, reach = rng.uniform(0.45, 0.9, n), rng.uniform(1.3, 1.65, n)
    halo = present ^ (rng.random(n) < 0.06)
    sun = 1.1 * (age - 52.0) / 17.0 + _SUN_W[site] + rng.normal(0.0, 0.6, n) > 0.75
    family = rng.random(n) < 0.22
    told = np.where(family, rng.random(n) < 0.85, rng.random(n) < 0.04)
    denied = ~told & (rng.random(n) < 0.15)
    pick, pick_no = rng.integers(len(_FAMILY), size=n), rng.integers(len(_NO_FAMILY), size=n)
    clauses = ["; " + _FAMILY[pick[i]] if told[i] else "; " + _NO_FAMILY[pick_no[i]]
               if denied[i] else "" for i in range(n)]
    rings = [(float(strength[i]), float(reach[i])) if present[i] else None for i in range(n)]
    columns = {"halo": halo, "sun_damage": sun, "family_history": family}
    return {k: v.astype(np.int64) for k, v in columns.items()}, rings, clauses


def _generate(
    out_dir: str | os.PathLike[str], n_rows: int, image_size: int, seed: int,
    findings: bool = False,
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """:func:`make_synth_derm`, plus the hidden per-row ``image``/``tabular``/``text`` evidences
    and ``risk`` (label = risk > 0) as arrays; for tests only, never put them in the table."""
    n_rows = _check_int("n_rows", n_rows, 20, None)
    image_size = _check_int("image_size", image_size, 16, 1024)
    seed = _check_int("seed", seed, 0, None)
    if not isinstance(findings, (bool, np.bool_)):
        raise ConfigError(f"The 'findings' parameter of make_synth_derm must be a bool. "
                          f"Got {findings!r} instead.")
    rng = np.random.default_rng(seed)
    img_dir = Path(out_dir) / "images"
    img_dir.mkdir(parents=True, exist_ok=True)

    per_patient = rng.integers(1, 4, n_rows)  # 1-3 lesions per patient (last one truncated)
    patient = rng.permutation(np.repeat(np.arange(n_rows), per_patient)[:n_rows])
    _, patient = np.unique(patient, return_inverse=True)  # ids 0..n_patients-1
    n_pat = int(patient.max()) + 1
    age_p = np.clip(rng.normal(52.0, 17.0, n_pat), 18.0, 92.0).round(1)
    male_p = rng.random(n_pat) < 0.5
    skin_p = rng.random(n_pat)
    noise_p = rng.normal(0.0, 0.45, n_pat)
    site = rng.choice(len(SITES), n_rows, p=_SITE_P)
    age, male = age_p[patient], male_p[patient]

    e_tab = (0.8 * (age - 52.0) / 17.0 + _SITE_W[site] + np.where(male, 0.3, -0.3)) / 0.93
    z_img = rng.normal(size=n_rows)
    logits = 1.3 * z_img[:, None] + 0.6 * rng.normal(size=(n_rows, 3))
    irr, var, dark = (1.0 / (1.0 + np.exp(-logits))).T
    e_img = logits.mean(1) / 1.35
    z_txt = rng.normal(size=n_rows)
    notes, e_txt = [], np.empty(n_rows)
    for i in range(n_rows):
        note, weight = _note(rng, float(z_txt[i]))
        notes.append(note)
        e_txt[i] = (weight - _TEXT_MEAN) / _TEXT_SD
    risk = e_img + e_tab + e_txt + noise_p[patient] + rng.normal(0.0, 0.55, n_rows)
    extra: dict[str, np.ndarray] = {}
    rings: list[tuple[float, float] | None] = [None] * n_rows
    if findings:  # their own stream: every draw from ``rng`` stays as without them
        extra, rings, clauses = _findings(np.random.default_rng([seed, 1]), age, site)
        notes = [note + clause for note, clause in zip(notes, clauses, strict=True)]

    xs, ys, rs, paths = np.empty(n_rows), np.empty(n_rows), np.empty(n_rows), []
    for i in range(n_rows):
        skin = (1 - skin_p[patient[i]]) * _SKIN[0] + skin_p[patient[i]] * _SKIN[1]
        arr, xs[i], ys[i], rs[i] = _lesion_image(
            rng, image_size, skin, irr[i], var[i], dark[i], rings[i])
        paths.append(f"images/{i:05d}.png")
        Image.fromarray(arr, "RGB").save(img_dir / f"{i:05d}.png", compress_level=1)

    width = max(4, len(str(n_pat - 1)))
    frame = pd.DataFrame({
        "image_path": paths,
        "age": age.astype(float),
        "sex": np.where(male, "male", "female"),
        "site": np.array(SITES, dtype=object)[site],
        "note": notes,
        "label": (risk > 0.0).astype(np.int64),
        "patient_id": [f"P{p:0{width}d}" for p in patient],
        "lesion_x": xs,
        "lesion_y": ys,
        "lesion_r": rs,
        **extra,
    })
    evidence = {"image": e_img, "tabular": e_tab, "text": e_txt, "risk": risk}
    return frame, evidence


def make_synth_derm(
    out_dir: str | os.PathLike[str], n_rows: int = 240, image_size: int = 64, seed: int = 0,
    findings: bool = False,
) -> pd.DataFrame:
    """Generate the ``synth-derm`` dataset: write PNG images, return the table.

    Parameters
    ----------
    out_dir:
        Directory; images are written to ``out_dir/images/{i:05d}.png`` (RGB).
    n_rows:
        Number of lesions (rows), >= 20. Patients have 1-3 lesions each.
    image_size:
        Side of the square images in pixels, in [16, 1024].
    seed:
        Seed of :func:`numpy.random.default_rng`; same seed, same bytes.
    findings:
        Add the :data:`SYNTH_DERM_FINDINGS` 0/1 columns ``halo`` (seen in the image only),
        ``sun_damage`` (age and site only) and ``family_history`` (the note only); see
        :data:`SYNTH_DERM_FINDINGS_GROUND_TRUTH`. This draws the halos and appends the
        family-history clauses; without it the output is exactly that of earlier versions.

    Returns
    -------
    pandas.DataFrame
        Columns ``image_path`` (relative to ``out_dir``), ``age``, ``sex``, ``site``, ``note``,
        ``label`` (1 malignant, 0 benign), ``patient_id``, and the lesion's true centre
        ``lesion_x``, ``lesion_y`` and mean radius ``lesion_r`` in pixels (pixel ``i`` spans
        ``[i, i + 1)``, so the centre lies in pixel ``int(lesion_y), int(lesion_x)``),
        then, with ``findings``, ``halo``, ``sun_damage`` and ``family_history``.
        The caller writes the CSV.

    Raises
    ------
    ValueError
        (:class:`~medfuse.errors.ConfigError`) naming the bad parameter and its valid range.

    Examples
    --------
    >>> import tempfile
    >>> df = make_synth_derm(tempfile.mkdtemp(), n_rows=40, image_size=32, seed=1)
    >>> sorted(df["label"].unique().tolist())
    [0, 1]
    """
    return _generate(out_dir, n_rows, image_size, seed, findings)[0]
