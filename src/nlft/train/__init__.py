"""Training: configuration (config), the methods table (methods), the NLFT trainer and its scoring passes,
callbacks, live weighting changes, saliency snapshots, the run itself (run) and merging an adapter (merge).
Nothing here imports evaluation (``nlft.evals``) or the saliency views (``nlft.see``).
"""
