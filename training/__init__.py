"""Training: interactions -> ALS model -> offline metrics -> versioned model directory.

Modules: `data` (parquet -> CSR), `model` (implicit ALS fit and batch top-N), `evaluate` (split,
metrics, baseline, train_and_evaluate), `search`, `explain`, `gate` (champion/challenger),
`stage` (the pipeline's train and score stages), `registry` (the only reader and writer of
`<data_dir>/models/<version>/`: save, load, scores, verify, list, prune) on `atomic_files`.
"""
