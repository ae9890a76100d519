"""What the shipped generators give a classifier: are their samples members of the class asked for, and do
they copy their training images?

    python bench/generators.py                        # every generator in checkpoints/generators/
    python bench/generators.py --per-class 100 --psi 1,0.5
    python bench/generators.py --quick                # the digits generator, 20 samples per class

For each generator and each latent scale psi (z ~ N(0, psi^2 I); psi < 1 is the truncation trick):
  - label accuracy, overall and per class, judged by the oracle: the classifier trained on the dataset's
    full training set (checkpoints/feature_extractors/; mgr/analysis/oracle.py), a measuring instrument
    that no run trains or selects on;
  - the three-sample data-copying test (Meehan et al. 2020; mgr/analysis/memorization.py): the Mann-Whitney
    z of generated vs held-out test images' distances to the generator's own training images (z << 0:
    closer than new real data, copying; z > 0: farther, not copying), with the medians of both;
  - the FID stored in the checkpoint when it was trained.
Writes bench/results/generators.json (one record per generator and psi, replacing the old ones).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from records import stamp, write_json  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def measure(path: Path, per_class: int, psi: float, heldout: int, seed: int) -> dict:
    import numpy as np

    from mgr.analysis.generators import copying_test, training_split
    from mgr.analysis.oracle import sample_and_judge
    from mgr.gan import load_generator
    G, meta = load_generator(path)
    data = training_split(path, meta)
    images, reading = sample_and_judge(G, meta["dataset"], per_class=per_class, seed=seed, psi=psi)
    copying = copying_test(images, data, heldout)
    return {"generator": path.name, "dataset": meta["dataset"], "train_images": int(len(data.y_train)),
            "psi": psi, "samples": int(len(reading.asked)),
            "label_acc": round(reading.label_accuracy, 4),
            "label_acc_per_class": [round(float(a), 4) for a in reading.per_class()],
            "oracle_test_acc": reading.oracle_test_acc,
            "copying_z": round(copying.z, 2),
            "median_generated_to_train": round(float(np.median(copying.generated_to_train)), 3),
            "median_heldout_to_train": round(float(np.median(copying.heldout_to_train)), 3),
            "fid": meta.get("fid"), "train_steps": meta.get("steps")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("generators", nargs="*", help="generator files (default: every one in checkpoints/generators/)")
    p.add_argument("--per-class", type=int, default=100, help="samples per class")
    p.add_argument("--psi", default="1", help="comma-separated latent scales, each in (0, 4]")
    p.add_argument("--heldout", type=int, default=1000, help="held-out test images for the copying test")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="the digits generator, 20 per class")
    p.add_argument("--out", default=str(RESULTS / "generators.json"))
    a = p.parse_args(argv)
    try:
        psis = [float(v) for v in a.psi.split(",")]
    except ValueError:
        p.error(f"--psi {a.psi!r}: give numbers in (0, 4], comma-separated")
    if not all(0 < v <= 4 for v in psis) or a.per_class < 1 or a.heldout < 2:
        p.error("--psi values must be in (0, 4], --per-class >= 1 and --heldout >= 2")
    import torch
    torch.set_num_threads(1)
    from mgr.paths import checkpoints_dir
    shipped = checkpoints_dir() / "generators"
    if a.quick:
        files, a.per_class = [shipped / "digits_ratio0.1_seed0.pt"], 20
    else:
        files = [Path(g) for g in a.generators] or sorted(shipped.glob("*.pt"))
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        p.error(f"no such generator file: {', '.join(missing)}")
    records = []
    for f in files:
        for psi in psis:
            rec = measure(f, a.per_class, psi, a.heldout, a.seed)
            records.append({**rec, **stamp("generators.py", argv)})
            print(f"{f.name} psi={psi}: label acc {rec['label_acc']:.3f} (oracle), copying z {rec['copying_z']:+.1f}, "
                  f"FID {rec['fid']}", flush=True)
    write_json(a.out, records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
