"""Rebuild checkpoints/datasets/fashion-mnist/ (the offline Fashion-MNIST subset) from the full data.

The bundle holds every training image that the splits of the shipped Fashion-MNIST generators use
(train and validation parts; read from their checkpoints' metadata, so a newly shipped generator
is covered by re-running this), the labels of all 60 000 training images and the full test set.
Each split's fingerprint is checked against the one its generator records before anything is
written. Usage:

    .venv/bin/python scripts/build_fashion_mnist_bundle.py [--src /usr/share/datasets/fashion-mnist]
"""
import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from mgr import fashion_mnist as fm  # noqa: E402
from mgr.checkpoint import atomic_write_text  # noqa: E402
from mgr.data import reduce_split, split_hash  # noqa: E402
from mgr.gan import list_generators  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, default=fm.DEBIAN_DIR, help="folder with the four original .gz files")
    ap.add_argument("--out", type=Path, default=fm.BUNDLE_DIR)
    a = ap.parse_args()
    missing = [n for n in fm.FILES if not (a.src / n).is_file()]
    if missing:
        sys.exit(f"{a.src} lacks {', '.join(missing)}; {fm.GET_FULL}")
    x_train, y_train, x_test, y_test = fm.read_full(a.src)
    labels = y_train.astype(np.int64)

    splits, keep = [], []
    for path, meta in list_generators():
        if isinstance(meta, str) or meta.get("dataset") != "fashion-mnist":
            continue
        size = {k: meta[k] for k in ("ratio", "per_class") if k in meta}
        train_idx, val_idx = reduce_split(labels, data_seed=meta["data_seed"], classes=fm.CLASSES, **size)
        if split_hash(train_idx, val_idx) != meta["split_hash"]:
            sys.exit(f"{path}: its split {size} (data seed {meta['data_seed']}) has fingerprint "
                     f"{split_hash(train_idx, val_idx)} here, but the generator records {meta['split_hash']}")
        splits.append({**size, "data_seed": meta["data_seed"], "split_hash": meta["split_hash"],
                       "images": len(train_idx) + len(val_idx), "generator": path.name})
        keep += [train_idx, val_idx]
    if not splits:
        sys.exit("no Fashion-MNIST generator in checkpoints/generators: nothing decides which images to bundle")
    keep = np.unique(np.concatenate(keep))

    a.out.mkdir(parents=True, exist_ok=True)
    fm.write_bundle(a.out, y_train, keep, x_train[keep], x_test, y_test)
    sizes = {n: (a.out / n).stat().st_size for n in (fm.BUNDLE_INDEX, fm.BUNDLE_IMAGES)}
    manifest = {
        "what": "Fashion-MNIST (Zalando, MIT licence: LICENSE here): the training images of the splits below, "
                "the labels of all 60 000 training images, the full 10 000-image test set",
        "train_images": len(keep), "test_images": len(y_test), "splits": sorted(splits, key=lambda s: s["images"]),
        "source": {n: hashlib.sha256((a.src / n).read_bytes()).hexdigest() for n in fm.FILES},
        "bytes": sizes, "command": "python scripts/build_fashion_mnist_bundle.py",
    }
    atomic_write_text(a.out / "manifest.json", json.dumps(manifest, indent=1) + "\n")
    print(f"{a.out}: {len(keep)} training + {len(y_test)} test images, "
          f"{sum(sizes.values()) / 2**20:.2f} MiB; splits: "
          + ", ".join(f"{s.get('ratio', s.get('per_class'))} seed {s['data_seed']}" for s in splits))


if __name__ == "__main__":
    main()
