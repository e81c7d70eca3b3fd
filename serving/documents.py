"""The serving documents of one model version, built from its `PublishPayload`.

`build_documents` checks the whole payload before anything is written (index ranges, padding,
finite scores, unique ids, attribute names) and returns a `VersionDocuments` whose
`documents(kind)` yields the documents of each collection lazily, `_CHUNK_ROWS` rows at a time
from whole-array conversions, so memory stays bounded for millions of users. The document shapes
are documented in `serving/store.py`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from bson.binary import Binary, BinaryVectorDtype

from recsys.errors import PublishError
from recsys.ids import check_id
from recsys.mongo import POPULAR_ID
from serving.payload import PublishPayload
from serving.rec_stats import recommendation_stats

_CHUNK_ROWS = 10_000
_RESERVED_ITEM_FIELDS = ("item_id", "score", "rank", "because")


def decode_vector(value: Binary) -> list[float]:
    """A stored FLOAT32 vector as Python floats (exactly the float32 values)."""
    return np.asarray(value.as_vector(return_numpy=True).data, dtype=np.float64).tolist()


def utc(value: datetime) -> datetime:
    """Timezone-aware UTC; a naive datetime is taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def batches(docs: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    """`docs` in lists of at most `size`."""
    batch: list[dict[str, Any]] = []
    for doc in docs:
        batch.append(doc)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


# --------------------------------------------------------------------------- checks

def _check_ranked(name: str, idx: np.ndarray, scores: np.ndarray, n_items: int) -> np.ndarray:
    """Validate a (rows, N) index matrix with trailing -1 padding; return the per-row lengths."""
    if idx.ndim != 2:
        raise PublishError(f"{name}: expected a 2-D index array, got shape {idx.shape}")
    if not np.issubdtype(idx.dtype, np.integer):
        raise PublishError(f"{name}: expected integer item indices, got {idx.dtype}")
    valid = idx >= 0
    if idx.size and (idx.max() >= n_items or idx.min() < -1):
        raise PublishError(f"{name}: item index out of range [-1, {n_items})")
    if valid.shape[1] > 1 and np.any(valid[:, 1:] & ~valid[:, :-1]):
        raise PublishError(f"{name}: -1 padding must only appear at the end of a row")
    if not np.all(np.isfinite(scores[valid])):
        raise PublishError(f"{name}: scores must be finite")
    return valid.sum(axis=1)


def _check_explain(
    idx: np.ndarray | None, scores: np.ndarray | None, rec_shape: tuple[int, ...], n_items: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """Validate optional (n_users, N, E) explanation arrays (-1 padding at the end only)."""
    if idx is None:
        return None
    idx = np.asarray(idx)
    scores = np.asarray(scores)
    if idx.ndim != 3 or idx.shape[:2] != rec_shape or scores.shape != idx.shape:
        raise PublishError(
            f"rec_explain_items/rec_explain_scores: expected shape {rec_shape} + (E,), "
            f"got {idx.shape} and {scores.shape}"
        )
    flat = idx.reshape(-1, idx.shape[2]) if idx.shape[2] else idx.reshape(-1, 0)
    _check_ranked("rec_explain_items", flat, scores.reshape(flat.shape), n_items)
    return idx, scores


def _to_bson_value(value: Any) -> Any:
    """numpy scalars/arrays and tuples as plain Python values MongoDB can store."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple | list):
        return [_to_bson_value(v) for v in value]
    if isinstance(value, float) and value != value:  # NaN: no value
        return None
    return value


def _attribute_values(attributes: dict[str, Any], n_items: int) -> dict[str, list[Any]]:
    """Item attributes as name -> list of BSON-ready values, one per item index."""
    out: dict[str, list[Any]] = {}
    for name, values in attributes.items():
        if not isinstance(name, str) or not name or name.startswith("$") or "." in name \
                or name in _RESERVED_ITEM_FIELDS:
            raise PublishError(f"item_attributes: invalid attribute name {name!r}")
        seq = values.tolist() if isinstance(values, np.ndarray) else list(values)
        if len(seq) != n_items:
            raise PublishError(
                f"item_attributes[{name!r}]: {len(seq)} values for {n_items} items"
            )
        out[name] = [_to_bson_value(v) for v in seq]
    return out


def _str_ids(name: str, ids: np.ndarray) -> list[str]:
    out = [str(x) for x in np.asarray(ids).tolist()]
    if len(set(out)) != len(out):
        raise PublishError(f"{name}: ids are not unique")
    return out


def _factors(name: str, arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim != 2:
        raise PublishError(f"{name}: expected a 2-D array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise PublishError(f"{name}: factors must be finite")
    return np.ascontiguousarray(arr, dtype=np.float32)


# --------------------------------------------------------------------------- documents

def _ranked_docs(
    ids: list[str],
    idx: np.ndarray,
    scores: np.ndarray,
    lengths: np.ndarray,
    item_ids: np.ndarray,
    base: dict[str, Any],
    *,
    attributes: dict[str, list[Any]] | None = None,
    explain_idx: np.ndarray | None = None,
    explain_scores: np.ndarray | None = None,
) -> Iterator[dict[str, Any]]:
    """One `{_id, ..., items: [...]}` document per row, built from whole-array conversions.

    `attributes` (name -> one value per item index) are copied into every listed item; with
    `explain_idx`/`explain_scores` ((rows, N, E), -1 padded) each item gets
    ``because: [{item_id, contribution}]``.
    """
    attrs = list((attributes or {}).items())
    explain = explain_idx is not None and explain_scores is not None and len(item_ids) > 0
    for start in range(0, len(ids), _CHUNK_ROWS):
        stop = min(start + _CHUNK_ROWS, len(ids))
        chunk = idx[start:stop]
        if len(item_ids):
            safe = np.where(chunk >= 0, chunk, 0)
            names = item_ids[safe].tolist()
            positions = safe.tolist()
        else:  # no items: every row is padding
            names = positions = [[] for _ in range(stop - start)]
        score_rows = scores[start:stop].astype(np.float64).tolist()
        if explain:
            assert explain_idx is not None and explain_scores is not None
            ex = explain_idx[start:stop]
            ex_valid = ex >= 0
            ex_names = item_ids[np.where(ex_valid, ex, 0)].tolist()
            ex_scores = explain_scores[start:stop].astype(np.float64).tolist()
            ex_lens = ex_valid.sum(axis=2).tolist()
        for row, (key, n, row_names, row_scores) in enumerate(zip(
            ids[start:stop], lengths[start:stop].tolist(), names, score_rows, strict=True
        )):
            items = [
                {"item_id": name, "score": score, "rank": rank}
                for rank, (name, score) in enumerate(
                    zip(row_names[:n], row_scores[:n], strict=True), start=1
                )
            ]
            if attrs:
                for item, pos in zip(items, positions[row], strict=False):
                    for attr, values in attrs:
                        item[attr] = values[pos]
            if explain:
                row_ex = zip(items, ex_names[row], ex_scores[row], ex_lens[row], strict=False)
                for item, en, es, m in row_ex:
                    item["because"] = [
                        {"item_id": a, "contribution": c}
                        for a, c in zip(en[:m], es[:m], strict=True)
                    ]
            yield {"_id": key, **base, "items": items}


def _embedding_docs(ids: list[str], factors: np.ndarray, version: str) -> Iterator[dict[str, Any]]:
    dim = int(factors.shape[1])
    for key, row in zip(ids, factors, strict=True):
        yield {
            "_id": key,
            "model_version": version,
            "dim": dim,
            "vector": Binary.from_vector(row, BinaryVectorDtype.FLOAT32),
        }


@dataclass(frozen=True, eq=False)
class VersionDocuments:
    """A checked payload, ready to be turned into documents collection by collection.

    Attributes:
        version: the model version.
        generated_at: when the recommendations were computed (aware UTC).
        counts: ``{users, items, recs, similar, popular, factors}`` for the version document.
        features: ``{item_attributes: [names], explanations: bool}`` for the version document.
        recommendations: what the lists cover (`serving.rec_stats.recommendation_stats`).
        expected: documents per kind of collection (``recs``, ``similar``, ...).
        user_ids, item_ids, rec_idx, rec_len, user_factors: what the sample check compares.
    """

    version: str
    generated_at: datetime
    counts: dict[str, int]
    features: dict[str, Any]
    recommendations: dict[str, Any]
    expected: dict[str, int]
    user_ids: list[str]
    item_ids: np.ndarray
    rec_idx: np.ndarray
    rec_len: np.ndarray
    user_factors: np.ndarray
    _ranked: dict[str, tuple[list[str], np.ndarray, np.ndarray, np.ndarray]]
    _item_factors: np.ndarray
    _attributes: dict[str, list[Any]]
    _explain: tuple[np.ndarray, np.ndarray] | None

    def documents(self, kind: str) -> Iterator[dict[str, Any]]:
        """The documents of one kind of collection (`recsys.mongo.SERVING_KINDS`), lazily."""
        if kind in self._ranked:
            ids, idx, scores, lengths = self._ranked[kind]
            explain = self._explain if kind == "recs" else None
            base = {"model_version": self.version, "generated_at": self.generated_at}
            return _ranked_docs(ids, idx, scores, lengths, self.item_ids, base,
                                attributes=self._attributes,
                                explain_idx=explain[0] if explain else None,
                                explain_scores=explain[1] if explain else None)
        if kind == "user_embeddings":
            return _embedding_docs(self.user_ids, self.user_factors, self.version)
        if kind == "item_embeddings":
            return _embedding_docs(self.item_ids.tolist(), self._item_factors, self.version)
        raise ValueError(f"unknown serving collection kind {kind!r}")


def build_documents(payload: PublishPayload) -> VersionDocuments:
    """Check every array of `payload` and prepare its documents (nothing is written).

    Raises:
        InvalidId: the version breaks the id rule.
        PublishError: an array is malformed (index out of range, padding in the middle,
            non-finite score or factor, duplicate ids, bad attribute name or length).
    """
    version = check_id(payload.version, kind="model version")
    user_ids = _str_ids("user_ids", payload.user_ids)
    item_list = _str_ids("item_ids", payload.item_ids)
    item_ids = np.asarray(item_list, dtype=object)
    n_items = len(item_list)
    ranked: dict[str, tuple[list[str], np.ndarray, np.ndarray, np.ndarray]] = {}
    for kind, ids, name, idx, scores in (
        ("recs", user_ids, "rec_items", payload.rec_items, payload.rec_scores),
        ("similar", item_list, "similar_items", payload.similar_items, payload.similar_scores),
        ("popular", [POPULAR_ID], "popular_items", np.asarray(payload.popular_items).reshape(1, -1),
         np.asarray(payload.popular_scores).reshape(1, -1)),
    ):
        idx, scores = np.asarray(idx), np.asarray(scores)
        ranked[kind] = (ids, idx, scores, _check_ranked(name, idx, scores, n_items))
    _, rec_idx, _, rec_len = ranked["recs"]
    user_factors = _factors("user_factors", payload.user_factors)
    item_factors = _factors("item_factors", payload.item_factors)
    explain = _check_explain(payload.rec_explain_items, payload.rec_explain_scores,
                             rec_idx.shape, n_items)
    attributes = _attribute_values(payload.item_attributes, n_items)
    n_users = len(user_ids)
    return VersionDocuments(
        version=version,
        generated_at=utc(payload.generated_at),
        counts={"users": n_users, "items": n_items, "recs": n_users, "similar": n_items,
                "popular": int(ranked["popular"][3][0]), "factors": int(user_factors.shape[1])},
        features={"item_attributes": sorted(attributes), "explanations": explain is not None},
        recommendations=recommendation_stats(rec_idx, n_items, attributes.get("genres")),
        expected={"recs": n_users, "similar": n_items, "popular": 1,
                  "user_embeddings": n_users, "item_embeddings": n_items},
        user_ids=user_ids, item_ids=item_ids, rec_idx=rec_idx, rec_len=rec_len,
        user_factors=user_factors, _ranked=ranked, _item_factors=item_factors,
        _attributes=attributes, _explain=explain,
    )
