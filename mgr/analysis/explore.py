"""The Explore page's computation: steer the generator's latent by hand at one evaluation step and
read what the classifier and the finder make of each position.

Everything here is a pure function of loaded models and arrays (no Streamlit), so the page's per-move
work is `position` + `readout` + a placement on a fitted map, and the tests call the same functions.

Which weights exist at a step: with keep_weights all (or auto and a classifier of at most 8 MiB,
e.g. any SmallCNN of the app's presets) the trainer writes weights/step_N.pt (classifier, finder,
co-learner) at every evaluation; besides, last.pt holds them at its last evaluation and best.pt the
classifier alone at its best validation step (`models.weight_sources`). The generator is frozen for
the whole run, so it is the same at every step; a step with a probe but no weights (keep_weights
last, a ResNet-18 under auto, a run made before step weights) gets a note instead of mixing steps.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field

import numpy as np

from ..runstore import Run
from .files import file_signature
from .models import NoWeights, weight_sources, weights_signature
from .mosaic import mosaic
from .projection import map_placer, pca

T_SEED = 99  # the probes' seed for their fixed draw of T (mgr/trainer/probes.py): the same kind of draw here
T_DRAWS = 8  # gap = mean over this many fixed draws of T: one draw of cutout alone can double or halve it
RANDOM_SEED = 0  # the fixed random directions
FAR_PERCENTILE = 0.999  # ‖z‖ above this quantile of χ_d: the generator has practically never seen the latent
NEAR_PERCENTILE = 0.001  # below: atypically close to the origin (high density, yet no draw of N(0, I) lands there)


NoCheckpoint = NoWeights  # the chosen step has a probe but no weights


# ----------------------------------------------------------------------------- models per step

def checkpoint_steps(run: Run) -> dict[int, str]:
    """{step: file} of the weights a run keeps (`models.weight_sources`): weights/step_N.pt (classifier,
    finder, co-learner), last.pt (the same, at its step) and best.pt (the classifier only)."""
    return weight_sources(run)


def checkpoint_signature(run: Run) -> tuple:
    """Cache key of which weights a run has: a new evaluation or a resume writes weights/, last.pt,
    best.pt, a generator retrained in place its file."""
    return weights_signature(run)


def step_signature(run: Run, source: str) -> tuple:
    """Cache key of one step's models: its weights file (from `checkpoint_steps`) and the generator."""
    from .models import generator_file
    return file_signature(run.path / source, generator_file(run))


@dataclass
class StepModels:
    step: int
    source: str  # "weights/step_N.pt", "last.pt" or "best.pt"
    G: object  # the frozen generator (the same at every step)
    model: object  # the classifier at `step`, eval mode
    finder: object | None  # F at `step`; None under best.pt (not kept) and for methods without one
    policy: str  # the run's T (config pcr_aug)
    classes: list[str]
    z_dim: int
    draws: list = field(default_factory=list)  # T_DRAWS fixed draws of T for one image


def step_models(run: Run, step: int, device: str = "cpu") -> StepModels:
    """The generator, the classifier and the finder of one evaluation step, from its weights file
    (`checkpoint_steps`; under best.pt the finder is None: not kept). Raises NoCheckpoint, naming the
    steps that have weights, for a step without any; ValueError for a run without a generator."""
    from ..augment import Augment
    from ..trainer import TrainConfig
    from .models import loaded_models
    cfg = TrainConfig.from_dict(run.config)
    if not cfg.uses_generator:
        raise ValueError(f"run {run.id} uses no generator (method {cfg.method}): there is nothing to steer")
    m = loaded_models(run, device, step)  # NoWeights for a step without weights; shared with other pages
    G, model, finder, classes = m["G"], m["model"], m["finder"], m["classes"]
    G.eval()
    T = Augment(cfg.pcr_aug)
    draws = fixed_draws(T, T_DRAWS, G.channels, G.resolution)
    return StepModels(step, m["source"], G, model, finder, cfg.pcr_aug, [str(c) for c in classes], G.z_dim, draws)


def fixed_draws(T, n: int, channels: int, resolution: int, seed: int = T_SEED) -> list:
    """n draws of T's random parameters, the same on every call (the run's RNG is left alone), as the
    probes fix theirs: so a readout changes only when the image does."""
    import torch
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return T.draw(torch.empty(n, channels, resolution, resolution))


def pcr_gaps(model, x, policy: str, draws: list):
    """Per-row ‖g(T(x)) − g(x)‖², averaged over feature dimensions, row i under draw i; g in eval mode,
    as the probes compute it (mgr/trainer/probes.py; the Consistency page reads those). Returns
    (gaps, T(x))."""
    import torch

    from ..augment import Augment
    with torch.no_grad():
        xt = Augment(policy).apply(x, draws)
        f = model.features(torch.cat([x, xt]))
        f_x, f_t = f.float().chunk(2)
        return (f_t - f_x).pow(2).mean(1), xt


# ----------------------------------------------------------------------------- directions

@dataclass
class Direction:
    key: str  # widget key part
    label: str  # what the slider says
    unit: np.ndarray  # float64, length 1
    note: str  # how it was made, with its numbers


def unit(v: np.ndarray) -> np.ndarray | None:
    n = float(np.linalg.norm(v))
    return None if n < 1e-9 else np.asarray(v, np.float64) / n


def finder_shift(finder, z: np.ndarray) -> np.ndarray:
    """F(z) − z at one latent (zeros without a finder)."""
    if finder is None:
        return np.zeros_like(z, dtype=np.float64)
    import torch
    with torch.no_grad():
        fz = finder(torch.as_tensor(z, dtype=torch.float32)[None])[0].double().numpy()
    return fz - np.asarray(z, np.float64)


def directions(models: StepModels, z0: np.ndarray, probe_z: np.ndarray, finder_z: np.ndarray, probe_y: np.ndarray,
               class_a: int, class_b: int, n_pcs: int = 3, n_random: int = 3) -> tuple[list[Direction], list[str]]:
    """The named unit directions to move z0 along, and notes on the ones that do not exist here:
    the finder's F(z0) − z0 at the starting latent; the top principal directions of the shifts
    F(z) − z of all probes at this step (from the step's probe file, so they exist at best.pt's step
    too); fixed random directions; the difference of the mean F(z) of class b's probes and class a's."""
    out, missing = [], []
    s = finder_shift(models.finder, z0)
    u = unit(s)
    if u is not None:
        out.append(Direction("finder", "finder F(z₀) − z₀", u, f"at the starting latent, normalised (‖F(z₀) − z₀‖ = "
                                                            f"{np.linalg.norm(s):.3f} before)"))
    else:
        missing.append("finder F(z₀) − z₀: " + ("no finder weights at this step (best.pt keeps the classifier only)"
                                                if models.source == "best.pt" else "F(z₀) = z₀ (no finder or no shift)"))
    shifts = np.asarray(finder_z, np.float64) - np.asarray(probe_z, np.float64)
    if np.abs(shifts).max() > 1e-6 and len(shifts) > 1:
        fitted = pca(shifts, n_pcs)
        for i, (c, r) in enumerate(zip(fitted.components_, fitted.explained_variance_ratio_)):
            out.append(Direction(f"pc{i + 1}", f"shift PC{i + 1}", c / np.linalg.norm(c),
                                 f"principal direction {i + 1} of the {len(shifts)} probes' F(z) − z at this step "
                                 f"({r:.0%} of their variance)"))
    else:
        missing.append("principal directions of the finder's shifts: the probes' F(z) equal z at this step")
    rng = np.random.default_rng(RANDOM_SEED)
    for i in range(n_random):
        out.append(Direction(f"rand{i + 1}", f"random {i + 1}", unit(rng.normal(size=models.z_dim)),
                             f"fixed random unit direction (seed {RANDOM_SEED})"))
    if class_a != class_b:
        fz = np.asarray(finder_z, np.float64)
        a, b = fz[probe_y == class_a], fz[probe_y == class_b]
        if len(a) and len(b):
            diff = b.mean(0) - a.mean(0)
            k = min(len(a), len(b))
            noise = np.sqrt(models.z_dim * (1 / len(a) + 1 / len(b)))
            out.append(Direction("classdir", f"mean F(z): {models.classes[class_a]} → {models.classes[class_b]}",
                                 unit(diff), f"mean F(z) of {len(b)} probes of {models.classes[class_b]} minus that of "
                                 f"{len(a)} of {models.classes[class_a]}, normalised (‖·‖ = {np.linalg.norm(diff):.2f} "
                                 f"before; two groups of {k} draws from N(0, I) differ by about {noise:.2f}: the probes' "
                                 "z are drawn without regard to the class and F sees no label, so expect mostly noise)"))
    return out, missing


def position(z0: np.ndarray, dirs: list[Direction], coefs: dict[str, float]) -> np.ndarray:
    """z = z0 + Σ coef_i · u_i over the named directions (the sliders' values)."""
    z = np.asarray(z0, np.float64).copy()
    for d in dirs:
        z += float(coefs.get(d.key, 0.0)) * d.unit
    return z


def label_mix(num_classes: int, class_a: int, class_b: int, t: float) -> np.ndarray:
    """(1 − t)·e_a + t·e_b: the soft label G takes as input (its class embeddings mixed)."""
    y = np.zeros(num_classes)
    y[class_a] += 1 - t
    y[class_b] += t
    return y


# ----------------------------------------------------------------------------- readouts

def prior_distance(z: np.ndarray) -> dict:
    """‖z‖ against N(0, I_d): ‖z‖ ~ χ_d, which concentrates around √d (std ≈ 1/√2 for any d), its
    percentile, the share of prior draws farther out, and the far-out threshold (the 99.9th percentile)."""
    from scipy import stats
    d = len(z)
    r = float(np.linalg.norm(z))
    pct, farther = float(stats.chi.cdf(r, d)), float(stats.chi.sf(r, d))  # sf: precise where cdf rounds to 1
    return {"norm": r, "sqrt_d": float(np.sqrt(d)), "percentile": pct, "farther": farther,
            "far": pct > FAR_PERCENTILE, "near": pct < NEAR_PERCENTILE, "max_abs": float(np.abs(z).max()),
            "far_norm": float(stats.chi.ppf(FAR_PERCENTILE, d))}


def _u8(x) -> np.ndarray:
    """Images in [-1, 1] as uint8, as the probes store them."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().byte().cpu().numpy()


@dataclass
class Readout:
    z: np.ndarray
    label: np.ndarray  # the soft label fed to G
    image: np.ndarray  # uint8 C×H×W, G(z, y)
    augmented: np.ndarray  # T(G(z, y)) under the first fixed draw
    probs: np.ndarray  # the classifier's softmax on G(z, y)
    gap: float  # mean over the fixed draws of ‖g(T(x)) − g(x)‖²
    gaps: np.ndarray  # per draw
    features: np.ndarray  # g(G(z, y)), for placing on the map
    prior: dict
    finder_image: np.ndarray | None = None  # G(F(z), y)
    finder_probs: np.ndarray | None = None
    finder_gap: float | None = None
    shift: float | None = None  # ‖F(z) − z‖
    finder_prior: dict | None = None

    @property
    def pred(self) -> int:
        return int(self.probs.argmax())


def readout(models: StepModels, z: np.ndarray, label: np.ndarray) -> Readout:
    """Everything the page shows for one position, in one generator and one classifier forward:
    G(z, y) and, with a finder, G(F(z), y); their probabilities; their PCR gaps over the fixed draws
    of T; the features of G(z, y); ‖z‖ against the prior; ‖F(z) − z‖."""
    import torch
    k = len(models.draws[0][0]) if models.draws and models.draws[0] else T_DRAWS
    zt = torch.as_tensor(np.asarray(z), dtype=torch.float32)[None]
    yt = torch.as_tensor(np.asarray(label), dtype=torch.float32)[None]
    with torch.no_grad():
        if models.finder is not None:
            fz = models.finder(zt)
            x = models.G(torch.cat([zt, fz]), yt.expand(2, -1))
        else:
            fz, x = None, models.G(zt, yt)
        f = models.model.features(x)
        probs = torch.softmax(models.model.head(f).float(), 1).numpy()
        n = len(x)  # each image under all k draws: rows image-major
        gaps, xt = pcr_gaps(models.model, x.repeat_interleave(k, 0), models.policy,
                            [tuple(p.repeat(n, *[1] * (p.dim() - 1)) for p in ps) for ps in models.draws])
        gaps = gaps.view(n, k).double().numpy()
    imgs, aug = _u8(x), _u8(xt)
    out = Readout(np.asarray(z, np.float64), np.asarray(label, np.float64), imgs[0], aug[0], probs[0],
                  float(gaps[0].mean()), gaps[0], f[0].float().numpy(), prior_distance(np.asarray(z, np.float64)))
    if fz is not None:
        fzn = fz[0].double().numpy()
        out.finder_image, out.finder_probs, out.finder_gap = imgs[1], probs[1], float(gaps[1].mean())
        out.shift = float(np.linalg.norm(fzn - out.z))
        out.finder_prior = prior_distance(fzn)
    return out


def step_placer(fmap, probe: dict):
    """The Feature space page's placement for this step's map: the KNN over the fitted points (the
    shown real subset, then the uniform and finder samples), fitted once per map."""
    parts, xy = [probe["real_features"][fmap.real_idx]], [fmap.real_xy]
    if len(fmap.uniform_xy):
        parts += [probe["uniform_features"], probe["finder_features"]]
        xy += [fmap.uniform_xy, fmap.finder_xy]
    return map_placer(np.concatenate(parts), np.concatenate(xy))


# ----------------------------------------------------------------------------- a recorded walk

def path_row(r: Readout, classes: list[str], coefs: dict[str, float], xy: np.ndarray | None) -> dict:
    """One recorded position as a flat row: where it is (the sliders, the label mix, z itself) and what
    was read there."""
    row = {f"coef_{k}": round(float(v), 4) for k, v in coefs.items()}
    for c, w in zip(classes, r.label):
        row[f"label_{c}"] = round(float(w), 4)
    row |= {"predicted": classes[r.pred], "p_predicted": float(r.probs.max()), "pcr_gap": r.gap,
            "z_norm": r.prior["norm"], "chi_percentile": r.prior["percentile"],
            "finder_shift": r.shift, "finder_pcr_gap": r.finder_gap,
            "map_x": None if xy is None else float(xy[0]), "map_y": None if xy is None else float(xy[1])}
    row |= {f"p_{c}": float(p) for c, p in zip(classes, r.probs)}
    row |= {f"z_{i}": float(v) for i, v in enumerate(r.z)}
    return row


def path_csv(rows: list[dict]) -> str:
    """The walk as CSV, one row per position (columns: the union, in first-seen order)."""
    cols = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, ["position", *cols], lineterminator="\n")
    w.writeheader()
    for i, r in enumerate(rows):
        w.writerow({"position": i + 1, **{k: ("" if r.get(k) is None else r.get(k)) for k in cols}})
    return buf.getvalue()


def path_png(images: list[np.ndarray], scale: int = 2) -> bytes:
    """The walk's images G(z, y) in one row (uint8 C×H×W each) as PNG bytes."""
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(mosaic(np.stack(images), len(images), scale)).save(buf, format="PNG")
    return buf.getvalue()
