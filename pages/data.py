"""Data & generators: what a shipped generator gets wrong (the oracle's label accuracy, and whether it copies
its training images), then the datasets this machine can load and every generator it ships."""
import numpy as np
import streamlit as st

from mgr import figures
from mgr.analysis.files import file_signature
from mgr.analysis.generators import copying_test, training_split
from mgr.analysis.mosaic import mosaic
from mgr.analysis.oracle import ORACLE_NOTE, sample_and_judge
from mgr.checkpoint import CheckpointError
from mgr.data import DEBIAN_FASHION_MNIST, DataError, dataset_info, known_datasets
from mgr.gan import list_generators, load_generator
from mgr.paths import checkpoints_dir
from pages._ui import CHART_CONFIG, through_app

through_app(__file__)  # a page's URL opened first still goes through app.py's navigation (pages/_ui.py)

DEFAULT = "fashion-mnist_ratio0.01_seed0_w16.pt"  # the teaching demos' generator
SAMPLES = 500  # generated images judged and tested, spread evenly over the classes
HELDOUT = 500  # held-out test images of the copying test
SEED = 0  # the latents' draw: the same samples on every visit
PSI = (0.25, 0.5, 0.75, 1.0)
COPIES, FARTHER = -3.0, 3.0  # the copying test's z below which samples copy, above which they sit farther off

# The page's sentences (mgr/ returns numbers; the words are here)
INTRO = ("Does a shipped generator draw the class it is asked for, and does it copy its training images? "
         "The datasets and every generator's record follow below.")
ORACLE = ORACLE_NOTE[0].upper() + ORACLE_NOTE[1:] + "; no run trains or selects on it."
ORACLE_DETAILS = (
    "**How to read it.** Each sample is generated for one class and shown to the oracle. The bars give, per "
    "class, the share it judges as that class; the matrix counts every sample by the class asked for (row) and "
    "the class judged as (column), so the diagonal is on class and a bright cell off it is a class the "
    "generator draws as another. The dotted line is the oracle on real test images: what a perfect generator "
    "would score, since the oracle itself errs that often.\n\n"
    "**What it does to a classifier.** An off-class sample is a wrong label: a classifier that trains on "
    "synthetic images with their asked-for class (gda, gda-mps) learns it; PCR and MGR use synthetic images "
    "only in a consistency loss that needs no label. A latent scale ψ below 1 (the truncation trick) draws "
    "typical samples with less variety.\n\n"
    "**Where it comes from.** Judging a generator's samples with a classifier trained on real data is the "
    "GAN-test of Shmelkov, Schmid and Alahari (ECCV 2018): it measures whether samples are recognisable as "
    "their class, not whether they cover it.")
COPYING_DETAILS = (
    "**How to read it.** For each generated image, the distance (Euclidean, in pixels in [-1, 1]) to the "
    "nearest of the generator's own training images; beside it the same for held-out test images, real images "
    "it never saw. A generator that makes new images of the data sits about as far from its training images "
    "as new real data does; one that copies sits closer. z is the Mann-Whitney z of the two samples: "
    f"at or below {COPIES:g} the badge says it copies, at or above {FARTHER:+g} that its samples sit farther off "
    "than real data (it has not fitted the data, the usual state of a small GAN), between that they are like "
    "new data. The closest pairs are where to look for a copy: a pair that looks the same is one.\n\n"
    "**What it does to a classifier.** A copy shows the classifier an image it already has, so it adds nothing "
    "but weight on that image.\n\n"
    "**Where it comes from.** The three-sample data-copying test of Meehan, Chaudhuri and Dasgupta "
    "(AISTATS 2020); they compute it per region of the data, this page over the whole sample.")


def u8(images: np.ndarray) -> np.ndarray:
    """[-1, 1] N×C×H×W -> uint8, for mosaic."""
    return ((np.clip(images, -1, 1) + 1) * 127.5).round().astype(np.uint8)


def tiles(images: np.ndarray) -> list[np.ndarray]:
    scale = max(1, 72 // images.shape[-1])
    return [mosaic(u8(x[None]), 1, scale) for x in images]


def per_class(num_classes: int) -> int:
    return max(10, SAMPLES // num_classes)


@st.cache_resource(max_entries=4, show_spinner=False)
def generator(path: str, sig: tuple):
    """The frozen generator at `path` and its metadata, loaded once per version of the file (`sig`)."""
    return load_generator(path)


@st.cache_data(max_entries=16, show_spinner=False)
def judged(path: str, sig: tuple, psi: float):
    """SAMPLES images of the generator at `path` (file signature `sig`: a retrained file is sampled anew) and the
    oracle's reading of them."""
    G, meta = generator(path, sig)
    return sample_and_judge(G, meta["dataset"], per_class=per_class(meta["num_classes"]), seed=SEED, psi=psi)


@st.cache_data(max_entries=16, show_spinner=False)
def copying(path: str, sig: tuple, psi: float) -> dict:
    """The three-sample test of those images against the generator's training split, and its closest pairs."""
    images, _ = judged(path, sig, psi)
    _, meta = generator(path, sig)
    data = training_split(path, meta, download=False)
    test = copying_test(images, data, HELDOUT)
    pairs = test.closest_pairs(8)
    train = data.x_train.numpy()
    return {"test": test, "train_images": len(train), "heldout": len(test.heldout_to_train), "pairs": pairs,
            "generated": images[[g for g, _, _ in pairs]], "nearest": train[[t for _, t, _ in pairs]]}


def label_finding(reading, classes: list[str]) -> tuple[str, str, str]:
    acc, real = reading.label_accuracy, reading.oracle_test_acc
    pc = reading.per_class()
    worst = int(np.nanargmin(pc))
    colour, verdict = (("green", "on class") if acc >= real - 0.05 else ("orange", "often off class")
                       if acc >= real - 0.30 else ("red", "badly off class"))
    worst_part = ("every class at 100%" if pc[worst] == 1 else
                  f"the worst class, {classes[worst]}, at {pc[worst]:.0%}")
    return colour, verdict, (f"The oracle judges {acc:.1%} of {len(reading.asked)} samples to be the class asked for "
                             f"(real test images: {real:.1%}); {worst_part}.")


def copying_finding(test) -> tuple[str, str, str]:
    g, h = float(np.median(test.generated_to_train)), float(np.median(test.heldout_to_train))
    numbers = f"z = {test.z:+.1f}; median distance {g:.2f} against {h:.2f}"
    if test.z <= COPIES:
        return "red", "copies", f"Its samples sit closer to its training images than new real images do ({numbers})."
    if test.z >= FARTHER:
        return "orange", "off the data", (f"Its samples sit farther from its training images than new real images do "
                                          f"({numbers}): they copy nothing, but are not yet like the data.")
    return "green", "like new data", f"Its samples sit as far from its training images as new real images do ({numbers})."


def show_finding(colour: str, verdict: str, sentence: str, details: str) -> None:
    st.markdown(f":{colour}-badge[{verdict}] {sentence}")
    with st.expander("details"):
        st.markdown(details)


def generator_name(path, meta) -> str:
    if isinstance(meta, str):
        return f"{path.stem} (unreadable)"
    return f"{path.stem} · FID {meta['fid']:.2f}" if "fid" in meta else path.stem


def inspect(path, meta: dict, psi: float) -> None:
    """The oracle's reading and the copying test of one readable generator."""
    classes = [str(c) for c in (meta.get("classes") or range(meta["num_classes"]))]
    sig = file_signature(path)
    try:
        generator(str(path), sig)
    except (CheckpointError, OSError, ValueError, KeyError, RuntimeError) as e:
        st.error(f"Generator file `{path.name}` cannot be used ({type(e).__name__}: {e}). Pick another, or train it "
                 "again with the command in its record below.")
        return
    try:
        with st.spinner(f"Sampling {per_class(meta['num_classes']) * meta['num_classes']} images and judging them…"):
            images, reading = judged(str(path), sig, psi)
    except FileNotFoundError as e:  # no oracle for this dataset on this machine
        st.info(f"No oracle to judge `{path.name}`'s samples with: {e}")
        return
    except (CheckpointError, OSError, ValueError, RuntimeError) as e:
        st.error(f"The oracle of {meta['dataset']} cannot judge `{path.name}`'s samples ({type(e).__name__}: {e}).")
        return
    a, b = st.columns(2)
    a.plotly_chart(figures.label_accuracy_bars(reading.per_class(), classes, reading.label_accuracy,
                                               reading.oracle_test_acc, "label accuracy per class, judged by the oracle"),
                   config=CHART_CONFIG, key="oracle-bars")
    b.plotly_chart(figures.confusion_heatmap(reading.confusion(), classes, "asked for × judged as, by the oracle"),
                   config=CHART_CONFIG, key="oracle-confusion")
    st.caption(ORACLE)
    colour, verdict, sentence = label_finding(reading, classes)
    show_finding(colour, verdict, sentence, ORACLE_DETAILS + f"\n\n**This reading.** {len(reading.asked)} samples, "
                 f"{per_class(meta['num_classes'])} per class, latents z ~ N(0, ψ² I) with ψ = {psi:g}, seed {SEED}.")
    off = reading.off_class(limit=10)
    st.markdown(f"**Most confidently off class** ({len(reading.off_class())} of {len(reading.asked)} samples): "
                "asked for → judged as by the oracle, with its probability")
    if len(off):
        st.image(tiles(images[off]), width=96,
                 caption=[f"asked {classes[reading.asked[i]]} → judged {classes[reading.judged[i]]} "
                          f"({reading.confidence[i]:.2f})" for i in off])
    else:
        st.caption("The oracle judges every sample the class asked for.")

    st.subheader("Does it copy its training images?")
    try:
        with st.spinner("Finding each image's nearest training image…"):
            out = copying(str(path), sig, psi)
    except (DataError, OSError) as e:
        st.info(f"The copying test needs the images `{path.name}` was trained on: {e}")
        return
    except (ValueError, KeyError, TypeError) as e:
        st.error(f"Generator file `{path.name}` names a training split this page cannot rebuild "
                 f"({type(e).__name__}: {e}).")
        return
    test = out["test"]
    a, b = st.columns([3, 2])
    a.plotly_chart(figures.distance_histograms(test.generated_to_train, test.heldout_to_train,
                                               f"{len(test.generated_to_train)} generated and {out['heldout']} held-out "
                                               f"images against its {out['train_images']} training images"),
                   config=CHART_CONFIG, key="copying-histogram")
    b.markdown("**Closest pairs** · generated | its nearest training image, with their distance")
    pairs = [mosaic(u8(np.stack([g, t])), 2, max(1, 48 // images.shape[-1]), pad=4)
             for g, t in zip(out["generated"], out["nearest"])]
    b.image(pairs, width=110, caption=[f"{classes[reading.asked[g]]} · {d:.2f}" for g, _, d in out["pairs"]])
    colour, verdict, sentence = copying_finding(test)
    show_finding(colour, verdict, sentence, COPYING_DETAILS)


st.title("🗂️ Data & generators")
st.markdown(INTRO)
found = list_generators()
if not found:
    st.info(f"No generators in {checkpoints_dir() / 'generators'}. Train one with "
            "`python -m mgr train-generator --dataset digits --ratio 0.1`.")
else:
    names = [p.name for p, _ in found]
    by_name = dict(zip(names, found))
    if st.session_state.get("data-generator") not in names:
        st.session_state["data-generator"] = DEFAULT if DEFAULT in names else names[0]
    c1, c2 = st.columns([3, 2])
    chosen = c1.selectbox("generator", names, key="data-generator", format_func=lambda n: generator_name(*by_name[n]))
    psi = c2.select_slider("latent scale ψ", PSI, value=1.0, key="data-psi",
                           help="z ~ N(0, ψ² I). Below 1, the truncation trick: more typical samples, less variety")
    path, meta = by_name[chosen]
    if isinstance(meta, str):
        st.error(f"Generator file `{path.name}` cannot be read: {meta}")
    else:
        inspect(path, meta, psi)


def available(name: str) -> str:
    if name == "digits":
        return "bundled"
    if name == "fashion-mnist" and DEBIAN_FASHION_MNIST.exists():
        return "installed (Debian package)"
    return "needs a download"


st.subheader("Datasets")
st.dataframe(
    [{"dataset": n, "shape": f"{i.channels}×{i.resolution}×{i.resolution}", "source": i.source, "here": available(n)}
     for n in known_datasets() if not n.startswith("imagefolder:") for i in [dataset_info(n)]],
    hide_index=True,
)

st.subheader("Generators")
st.markdown("MGR needs a frozen class-conditional generator trained on *the same reduced split* as the "
            "classifier (minus its validation part); the trainer refuses one made for another split.")
for i, (path, meta) in enumerate(found):
    if isinstance(meta, str):
        st.error(f"{path.name}: {meta}")
        continue
    size = f"{meta['per_class']} per class" if "per_class" in meta else f"ratio {meta['ratio']:g}"
    fid = f"FID {meta['fid']:.2f}" if "fid" in meta else "FID not measured"
    with st.expander(f"{meta['dataset']} · {size} · data seed {meta['data_seed']} · {fid}", expanded=len(found) <= 4 or i == 0):
        grid = path.with_suffix(".png")
        cols = st.columns([2, 3])
        if grid.exists():
            cols[0].image(str(grid), caption="one row per class, fixed latents")
        a, b, c = cols[1].columns(3)
        a.metric("FID (test split)", f"{meta['fid']:.2f}" if "fid" in meta else "—")
        b.metric("label accuracy", f"{meta['label_acc']:.1%}" if "label_acc" in meta else "—",
                 help="the FID classifier's accuracy on samples of each class: do samples look like their class?")
        c.metric("training time", f"{meta.get('train_seconds', 0) / 60:.0f} min",
                 help=f"{meta['steps']} steps on {meta.get('device', '?')}")
        cols[1].caption(f"FID features: {meta.get('fid_extractor', 'not measured')}; {meta.get('fid_n_fake', '?')} generated vs "
                        f"{meta.get('fid_n_real', '?')} test images. Split fingerprint `{meta['split_hash']}`.")
        cols[1].code(meta.get("command") or "(command not recorded)", language="bash")
        with cols[1].expander("all metadata"):
            st.json(meta)
