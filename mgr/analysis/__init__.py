"""From run directories to the data behind the app's figures, one module per job (the pages import
the module they need):

    runs         summaries, configurations (seeds grouped), Compare's seed table
    curves       metrics and scalars as columns, smoothing, mean ± std over seeds
    latents      the Latents page: uniform vs finder samples, z and F(z)
    finder_view  the Latents page's finder: hg_cos reading, amplified shifts, shift over training, sample stats
    feature_map  the Feature space map and its disk cache
    margins      samples between the real class clusters
    projection   PCA, UMAP, placing new points on a fitted map
    consistency  PCR gaps over training, the extreme samples
    models       a run's generator, finder and classifier; interpolation through G
    explore      the Explore page: models per step, latent directions, readouts of one position, a walk
    finder_fid   FID of uniform vs finder samples, cached per checkpoint
    memorization the three-sample data-copying test: generated vs held-out images' distances to the training set
    oracle       a classifier trained on the full training set judges synthetic images (label accuracy,
                 asked-for vs judged-as, off-class samples): a measuring instrument, never a training input
    mosaic       image tiles
    files        the cache folder, file signatures, probe steps

No Streamlit here: pages call these functions and draw what they return, and the functions are
tested without a browser. Every reader tolerates a run that is still being written, has failed,
or was deleted or corrupted while a page is open: it returns what it can, with a message, instead
of raising.
"""
from .runs import RunSummary, runs_overview, summarize

__all__ = ["RunSummary", "runs_overview", "summarize"]
