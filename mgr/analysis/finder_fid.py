"""FID of a run's uniform samples G(z, y) and finder samples G(F(z), y) against the test split, at
its last checkpoint, cached in <run>/analysis/ per generator and checkpoint file (the Latents page
and bench/finder_fid.py)."""
from __future__ import annotations

import json
import time

from ..checkpoint import atomic_write_text
from ..runstore import Run
from .files import cache_dir, file_signature, params_key
from .models import generator_file, loaded_models


def fid_uniform_vs_finder(run: Run, num: int = 2000, extractor: str = "auto") -> dict:
    """FID against the test split of `num` uniform samples G(z, y) and `num` finder samples
    G(F(z), y) at the run's last checkpoint, class-balanced, with the feature extractor named.
    Cached in <run>/analysis/ under a key of the files the numbers come from: the generator
    checkpoint and last.pt (path, mtime, size), so a retrained generator or a resumed run is
    measured again, never served the old numbers."""
    import torch

    from ..data import load
    from ..fid import Pipeline, class_sampler, frechet
    gen, last = generator_file(run), run.path / "last.pt"
    key = params_key({"num": num, "extractor": extractor, "generator": str(gen.resolve()),
                      "generator_file": file_signature(gen), "checkpoint": str(last.resolve()),
                      "checkpoint_file": file_signature(last)})
    cache = cache_dir(run) / f"fid_{num}_{extractor}_{key}.json"
    try:
        return {**json.loads(cache.read_text()), "cached": True}
    except (OSError, ValueError):
        pass
    models = loaded_models(run)
    cfg = models["cfg"]
    data = load(cfg.data)
    pipe = Pipeline(extractor, cfg.data.dataset, "cpu")
    t0 = time.time()
    real = pipe.features(data.x_test)
    out = {"step": models["step"], "extractor": pipe.name, "num": num, "n_real": len(data.y_test), "reference": "test split"}
    for kind, finder in (("uniform", None), ("finder", models["finder"])):
        if kind == "finder" and finder is None:
            out["finder"] = None
            continue
        torch.manual_seed(0)  # the same z for both kinds
        fake = pipe.sampler_features(class_sampler(models["G"], data.num_classes, finder), models["G"].z_dim, num)
        out[kind] = round(frechet(fake, real), 3)
    out["seconds"] = round(time.time() - t0, 1)
    try:
        atomic_write_text(cache, json.dumps(out))
    except OSError:
        pass
    return {**out, "cached": False}
