"""Training: interactions -> ALS model -> offline metrics -> versioned model directory.

Modules: `data` (parquet -> CSR), `model` (implicit ALS fit and batch top-N), `evaluate` (split,
metrics, baseline, train_and_evaluate), `registry` (save/load a model version).
"""
