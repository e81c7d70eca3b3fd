"""Champion/challenger gate: publish a new model only if it beats the active one.

Both models are scored on the SAME evaluation data: the challenger's holdout test split (re-made
from the snapshot with the fraction, split strategy and seed recorded in the challenger's metrics;
metrics without a strategy predate the time split and used the random one), with each user's
training-split items removed from the candidates.

- Challenger: its recorded holdout metrics (the model fitted on the training split only; the
  published model is a refit on all data and would have seen the test items).
- Champion: the active version's saved item factors. Its user vectors are folded in (solved
  exactly, as implicit's `recalculate_user`) from each user's TRAINING-split history, so its stored
  user vectors, which were fitted on data that may contain the test items, are not used. Ids are
  mapped by name; users the champion does not know get no recommendations from it (zero hits) and
  items it does not know cannot be recommended by it. The champion's item factors may still carry
  a trace of the test interactions when its snapshot overlaps this one: that bias favours the
  champion, so a challenger that wins has won despite it.

No champion (nothing active yet, or its model files are gone or broken) means publish. The caller
says which version is the champion (the flow asks the serving store); the gate itself never reads
MongoDB.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from features.snapshot import Manifest
from recsys.errors import ModelError
from recsys.settings import Settings
from training.data import InteractionMatrix, load_interactions, to_csr
from training.evaluate import evaluation_users, holdout_split, ranking_metrics
from training.explain import fold_in_users
from training.model import PAD_ITEM, AlsParams, apply_weighting
from training.registry import METADATA_FILE, load_model, model_info, model_metadata
from training.search import objective_key

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GateDecision:
    """The gate's verdict.

    Attributes:
        publish: True to publish the challenger.
        reason: one sentence for logs, artifacts and the run's final message.
        metric: the compared metric key, e.g. "ndcg@10".
        challenger_metric: the challenger's value on the evaluation data.
        champion_metric: the champion's value (None without a champion).
        champion_version: the active version compared against (None without one).
        margin: the configured margin.
    """

    publish: bool
    reason: str
    metric: str
    challenger_metric: float
    champion_metric: float | None = None
    champion_version: str | None = None
    margin: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _challenger_value(metadata: dict[str, Any], key: str, path: Path) -> float:
    try:
        return float(metadata["metrics"]["als"][key])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"model version {path.name!r}: {METADATA_FILE} has no holdout metric "
                         f"'metrics.als.{key}' ({path / METADATA_FILE})") from exc


def _positions(reference: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Index of each of `ids` in `reference` (-1 where absent); vectorised, any order."""
    if len(reference) == 0:
        return np.full(len(ids), -1, dtype=np.int64)
    sorter = np.argsort(reference, kind="stable")
    pos = np.minimum(np.searchsorted(reference, ids, sorter=sorter), len(reference) - 1)
    found = sorter[pos]
    return np.where(reference[found] == ids, found, -1).astype(np.int64)


def champion_recommendations(champion_dir: Path, data: InteractionMatrix, train: sp.csr_matrix,
                             k: int, *, batch_size: int = 2048,
                             users: np.ndarray | None = None) -> np.ndarray:
    """Top-k of the champion for every user of `data` (or for the rows `users`), in `data`'s
    item indices.

    Args:
        champion_dir: the champion's model directory.
        data: the challenger's snapshot (ids name the rows/columns of `train`).
        train: the challenger's training split; its items are the users' known history
            (used for the fold-in and filtered out of the candidates).
        k: list length.
        batch_size: users scored per matrix product.
        users: the evaluation sample (`training.evaluate.evaluation_users`); None: all users.

    Returns:
        (n_users or len(users), k) int32 item indices of `data`, -1 where the champion has
        nothing to offer.
    """
    model, champ_users, champ_items, champ_meta = load_model(champion_dir)
    params = AlsParams(**champ_meta["params"])
    item_factors = np.asarray(getattr(model.item_factors, "to_numpy", lambda: model.item_factors)(),
                              dtype=np.float32)
    # item index of `data` -> champion item index (-1: unknown to the champion)
    item_map = _positions(champ_items, data.item_ids)
    user_ids = data.user_ids if users is None else data.user_ids[users]
    known_user = _positions(champ_users, user_ids) >= 0
    if users is not None:
        train = train[users]
    n_users = train.shape[0]
    log.info("gate: champion %s knows %d/%d users and %d/%d items", champion_dir.name,
             int(known_user.sum()), n_users, int((item_map >= 0).sum()), data.n_items)

    # the users' training history in the champion's item space (unknown items dropped)
    coo = train.tocoo()
    keep = item_map[coo.col] >= 0
    history = to_csr(sp.coo_matrix((coo.data[keep], (coo.row[keep], item_map[coo.col[keep]])),
                                   shape=(n_users, len(champ_items))))
    confidence = to_csr(apply_weighting(history, params.weighting) * params.alpha)
    users = fold_in_users(item_factors, confidence, regularization=params.regularization)

    # champion item index -> data item index, to map the ranked lists back
    back = np.full(len(champ_items), PAD_ITEM, dtype=np.int64)
    back[item_map[item_map >= 0]] = np.flatnonzero(item_map >= 0)
    recommendable = back >= 0
    out = np.full((n_users, k), PAD_ITEM, dtype=np.int32)
    n_ask = min(k, int(recommendable.sum()))
    if n_ask == 0:
        return out
    with threadpool_limits(1, "blas"):
        for start in range(0, n_users, batch_size):
            stop = min(start + batch_size, n_users)
            scores = users[start:stop] @ item_factors.T
            scores[:, ~recommendable] = -np.inf
            block = history[start:stop]
            rows = np.repeat(np.arange(stop - start), np.diff(block.indptr))
            scores[rows, block.indices] = -np.inf
            top = np.argpartition(-scores, n_ask - 1, axis=1)[:, :n_ask]
            top_scores = np.take_along_axis(scores, top, axis=1)
            order = np.argsort(-top_scores, axis=1, kind="stable")
            top = np.take_along_axis(top, order, axis=1)
            valid = np.isfinite(np.take_along_axis(top_scores, order, axis=1))
            valid &= known_user[start:stop, None]
            out[start:stop, :n_ask] = np.where(valid, back[top], PAD_ITEM)
    return out


def decide(challenger_dir: Path, manifest: Manifest, *, champion_version: str | None,
           settings: Settings) -> GateDecision:
    """Compare the challenger with the champion on the challenger's holdout split.

    Args:
        challenger_dir: the new model's directory (saved by `train_run_model`).
        manifest: the feature snapshot the challenger was trained on.
        champion_version: the version being served (the caller reads it from the serving
            store), or None when nothing is served yet.
        settings: `gate_metric`, `gate_margin`, `eval_k`, `holdout_fraction`, `models_dir`.

    Returns:
        GateDecision; `publish` is True when there is no champion, or the challenger's metric
        exceeds the champion's by more than `gate_margin`.
    """
    challenger_dir = Path(challenger_dir)
    meta = model_metadata(challenger_dir)
    metrics = meta.get("metrics", {})
    k = int(metrics.get("k", settings.eval_k))
    key = objective_key(settings.gate_metric, k)
    challenger = _challenger_value(meta, key, challenger_dir)
    margin = settings.gate_margin

    if champion_version is None:
        return GateDecision(publish=True, reason="no active model: publishing the first one",
                            metric=key, challenger_metric=challenger, margin=margin)
    if champion_version == challenger_dir.name:
        return GateDecision(publish=True, reason=f"{champion_version} is already active",
                            metric=key, challenger_metric=challenger,
                            champion_version=champion_version, margin=margin)
    champion = model_info(settings.models_dir, champion_version)
    if not champion.ok:
        log.warning("gate: active version %s is unusable: %s", champion_version, champion.problem)
        return GateDecision(publish=True, reason=f"active version {champion_version} has no usable "
                            f"model files in {settings.models_dir}: cannot compare, publishing",
                            metric=key, challenger_metric=challenger,
                            champion_version=champion_version, margin=margin)

    split = str(metrics.get("holdout_split", "random"))
    split_seed = int(metrics.get("split_seed", meta["params"]["seed"]))
    data = load_interactions(manifest.view_path("interactions"), with_last_ts=split == "time")
    _, user_ids, item_ids, _ = load_model(challenger_dir)
    if not (np.array_equal(data.user_ids, user_ids) and np.array_equal(data.item_ids, item_ids)):
        raise ModelError(f"model {challenger_dir.name} ids do not match snapshot "
                         f"{manifest.snapshot_id}")
    train, test, _ = holdout_split(
        data.matrix, float(metrics.get("holdout_fraction", settings.holdout_fraction)),
        split_seed, split=split, last_ts=data.last_ts)
    # The same users the challenger's metrics were computed on.
    sample = evaluation_users(data.n_users, metrics.get("max_eval_users"), split_seed)
    recs = champion_recommendations(champion.path, data, train, k, users=sample)
    champion_value = float(ranking_metrics(recs, test if sample is None else test[sample], k,
                                           n_items=data.n_items)[key])

    publish = challenger > champion_value + margin
    verdict = "publishing the challenger" if publish else f"keeping champion {champion_version}"
    reason = (f"challenger {challenger_dir.name} {key}={challenger:.4f} vs champion "
              f"{champion_version} {key}={champion_value:.4f} (margin {margin:g}): {verdict}")
    log.info("gate: %s", reason)
    return GateDecision(publish=publish, reason=reason, metric=key, challenger_metric=challenger,
                        champion_metric=champion_value, champion_version=champion_version,
                        margin=margin)
