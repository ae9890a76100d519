"""MGR Lab: Meta Generative Regularization (and MLTP, CML) trainer and exploration tools.

The library never imports Streamlit, Plotly or UMAP: it runs wherever torch runs.
"""
__version__ = "0.1.0"
