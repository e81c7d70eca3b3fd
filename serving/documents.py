"""The serving documents of one model version, built from arrays.

The user side (recommendation lists and user embeddings) and the item side (similar items, the
popular list, item embeddings) are checked and built separately, so a partitioned publish can
build each user partition in its own process (`build_user_documents`) while the item side is
built once (`build_item_documents`); `build_documents` does both for a whole `PublishPayload`.
Every check runs before anything is written (index ranges, padding, finite scores, unique ids,
attribute names). `documents(kind)` yields the documents of each collection lazily,
`_CHUNK_ROWS` rows at a time from whole-array conversions, so memory stays bounded for millions
of users. The document shapes are documented in `serving/store.py`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from bson.binary import Binary, BinaryVectorDtype

from recsys.errors import PublishError
from recsys.ids import check_id
from recsys.mongo import POPULAR_ID
from serving.payload import PublishPayload
from serving.rec_stats import list_counts, stats_from_counts

_CHUNK_ROWS = 10_000
_RESERVED_ITEM_FIELDS = ("item_id", "score", "rank", "because")
USER_KINDS = ("recs", "user_embeddings")
ITEM_KINDS = ("similar", "popular", "item_embeddings")


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
    if scores.shape != idx.shape:
        raise PublishError(f"{name}: scores of shape {scores.shape} for indices of shape "
                           f"{idx.shape}")
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


def attribute_values(attributes: dict[str, Sequence[Any]], n_items: int
                     ) -> dict[str, list[Any]]:
    """Item attributes as name -> list of BSON-ready values, one per item index.

    Raises:
        PublishError: a name is not a plain field name or a list has the wrong length.
    """
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


def _str_ids(name: str, ids: np.ndarray | Sequence[Any]) -> list[str]:
    out = [str(x) for x in np.asarray(ids).tolist()]
    if len(set(out)) != len(out):
        raise PublishError(f"{name}: ids are not unique")
    return out


def _factors(name: str, arr: np.ndarray, rows: int) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim != 2 or arr.shape[0] != rows:
        raise PublishError(f"{name}: expected a 2-D array of {rows} rows, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise PublishError(f"{name}: factors must be finite")
    return np.ascontiguousarray(arr, dtype=np.float32)


def attribute_columns(attributes: dict[str, list[Any]]) -> dict[str, np.ndarray]:
    """`attribute_values` as 1-D object arrays, the form `build_user_documents` takes (fancy
    indexing then gathers references, even to list values)."""
    columns = {}
    for name, values in attributes.items():
        columns[name] = np.empty(len(values), dtype=object)
        columns[name][:] = values
    return columns


# --------------------------------------------------------------------------- documents

def _ranked_docs(
    ids: list[str],
    idx: np.ndarray,
    scores: np.ndarray,
    lengths: np.ndarray,
    item_ids: np.ndarray,
    base: dict[str, Any],
    *,
    attributes: dict[str, np.ndarray] | None = None,
    explain: tuple[np.ndarray, np.ndarray] | None = None,
) -> Iterator[dict[str, Any]]:
    """One `{_id, ..., items: [...]}` document per row, built from whole-array conversions.

    `attributes` (name -> object array, one value per item index) are copied into every listed
    item; with `explain` ((rows, N, E) indices and contributions, -1 padded) each item gets
    ``because: [{item_id, contribution}]``. Every per-element lookup (names, scores,
    attributes) is one fancy-indexing gather per chunk, so the per-row Python work is only the
    dict displays themselves (the bulk of a publish's client time).
    """
    attrs = list((attributes or {}).items())
    explain = explain if explain is not None and len(item_ids) > 0 else None
    ranks = list(range(1, idx.shape[1] + 1)) if idx.ndim == 2 else []
    for start in range(0, len(ids), _CHUNK_ROWS):
        stop = min(start + _CHUNK_ROWS, len(ids))
        rows = stop - start
        if len(item_ids):
            safe = np.where(idx[start:stop] >= 0, idx[start:stop], 0)
            names = item_ids[safe].tolist()
            attr_rows = [(attr, values[safe].tolist()) for attr, values in attrs]
        else:  # no items: every row is padding
            names = [[] for _ in range(rows)]
            attr_rows = [(attr, names) for attr, _ in attrs]
        score_rows = scores[start:stop].astype(np.float64).tolist()
        lens = lengths[start:stop].tolist()
        if len(attr_rows) == 1:  # the common case (genres): one dict display per item
            attr, values = attr_rows[0]
            item_rows = [
                [{"item_id": a, "score": s, "rank": r, attr: g}
                 for a, s, r, g in zip(row_names, row_scores, ranks[:n], row_values,
                                       strict=False)]
                for row_names, row_scores, n, row_values in zip(
                    names, score_rows, lens, values, strict=True)]
        else:
            item_rows = [
                [{"item_id": a, "score": s, "rank": r}
                 for a, s, r in zip(row_names, row_scores, ranks[:n], strict=False)]
                for row_names, row_scores, n in zip(names, score_rows, lens, strict=True)]
            for attr, values in attr_rows:
                for items, row_values in zip(item_rows, values, strict=True):
                    for item, value in zip(items, row_values, strict=False):
                        item[attr] = value
        if explain is not None:
            ex = explain[0][start:stop]
            ex_valid = ex >= 0
            ex_names = item_ids[np.where(ex_valid, ex, 0)].tolist()
            ex_scores = explain[1][start:stop].astype(np.float64).tolist()
            ex_lens = ex_valid.sum(axis=2).tolist()
            for items, row_names, row_scores, row_lens in zip(
                    item_rows, ex_names, ex_scores, ex_lens, strict=True):
                for item, en, es, m in zip(items, row_names, row_scores, row_lens,
                                           strict=False):
                    item["because"] = [{"item_id": a, "contribution": c}
                                       for a, c in zip(en[:m], es[:m], strict=True)]
        for key, items in zip(ids[start:stop], item_rows, strict=True):
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
class UserDocuments:
    """Checked users (all of a version, or one partition): their lists and embeddings.

    Attributes:
        version: the model version.
        generated_at: when the recommendations were computed (aware UTC).
        user_ids: the users, row order of the arrays.
        item_ids: every item of the model (object array of str); indices point into it.
        rec_idx, rec_scores, rec_len: the (rows, N) lists, their scores and lengths.
        user_factors: (rows, f) float32 embeddings.
    """

    version: str
    generated_at: datetime
    user_ids: list[str]
    item_ids: np.ndarray
    rec_idx: np.ndarray
    rec_scores: np.ndarray
    rec_len: np.ndarray
    user_factors: np.ndarray
    _attributes: dict[str, np.ndarray]
    _explain: tuple[np.ndarray, np.ndarray] | None

    @property
    def explanations(self) -> bool:
        """The lists carry ``because`` (explaining items)."""
        return self._explain is not None

    def list_counts(self) -> tuple[np.ndarray, int]:
        """`serving.rec_stats.list_counts` of these lists (partitions' counts add up)."""
        return list_counts(self.rec_idx, len(self.item_ids))

    def documents(self, kind: str) -> Iterator[dict[str, Any]]:
        """The documents of ``recs`` or ``user_embeddings``, lazily."""
        if kind == "recs":
            base = {"model_version": self.version, "generated_at": self.generated_at}
            return _ranked_docs(self.user_ids, self.rec_idx, self.rec_scores, self.rec_len,
                                self.item_ids, base, attributes=self._attributes,
                                explain=self._explain)
        if kind == "user_embeddings":
            return _embedding_docs(self.user_ids, self.user_factors, self.version)
        raise ValueError(f"not a user collection kind: {kind!r}")


@dataclass(frozen=True, eq=False)
class ItemDocuments:
    """The checked item side of a version: similar items, the popular list, item embeddings.

    Attributes:
        version, generated_at: as in `UserDocuments`.
        item_ids: the model's items (object array of str).
        attributes: name -> one BSON-ready value per item (denormalised into every list).
        popular_len: entries of the popular list.
    """

    version: str
    generated_at: datetime
    item_ids: np.ndarray
    attributes: dict[str, list[Any]]
    popular_len: int
    _ranked: dict[str, tuple[list[str], np.ndarray, np.ndarray, np.ndarray]]
    _item_factors: np.ndarray

    @property
    def expected(self) -> dict[str, int]:
        """Documents per kind of collection (``similar``, ``popular``, ``item_embeddings``)."""
        return {"similar": len(self.item_ids), "popular": 1,
                "item_embeddings": len(self.item_ids)}

    @property
    def factors(self) -> int:
        """The embedding dimension."""
        return int(self._item_factors.shape[1])

    def documents(self, kind: str) -> Iterator[dict[str, Any]]:
        """The documents of ``similar``, ``popular`` or ``item_embeddings``, lazily."""
        if kind in self._ranked:
            ids, idx, scores, lengths = self._ranked[kind]
            base = {"model_version": self.version, "generated_at": self.generated_at}
            return _ranked_docs(ids, idx, scores, lengths, self.item_ids, base,
                                attributes=attribute_columns(self.attributes))
        if kind == "item_embeddings":
            return _embedding_docs(self.item_ids.tolist(), self._item_factors, self.version)
        raise ValueError(f"not an item collection kind: {kind!r}")


def build_item_documents(version: str, generated_at: datetime, *, item_ids: Any,
                         similar_items: np.ndarray, similar_scores: np.ndarray,
                         popular_items: np.ndarray, popular_scores: np.ndarray,
                         item_factors: np.ndarray,
                         attributes: dict[str, Sequence[Any]] | None = None) -> ItemDocuments:
    """Check the item side of a version and prepare its documents (nothing is written).

    Raises:
        InvalidId: the version breaks the id rule.
        PublishError: an array is malformed (index out of range, padding in the middle,
            non-finite score or factor, duplicate ids, bad attribute name or length).
    """
    version = check_id(version, kind="model version")
    item_list = _str_ids("item_ids", item_ids)
    n_items = len(item_list)
    ranked: dict[str, tuple[list[str], np.ndarray, np.ndarray, np.ndarray]] = {}
    for kind, ids, name, idx, scores in (
        ("similar", item_list, "similar_items", similar_items, similar_scores),
        ("popular", [POPULAR_ID], "popular_items", np.asarray(popular_items).reshape(1, -1),
         np.asarray(popular_scores).reshape(1, -1)),
    ):
        idx, scores = np.asarray(idx), np.asarray(scores)
        if kind == "similar" and idx.shape[:1] != (n_items,):
            raise PublishError(f"{name}: {idx.shape[:1]} rows for {n_items} items")
        ranked[kind] = (ids, idx, scores, _check_ranked(name, idx, scores, n_items))
    return ItemDocuments(
        version=version, generated_at=utc(generated_at),
        item_ids=np.asarray(item_list, dtype=object),
        attributes=attribute_values(attributes or {}, n_items),
        popular_len=int(ranked["popular"][3][0]), _ranked=ranked,
        _item_factors=_factors("item_factors", item_factors, n_items))


def build_user_documents(version: str, generated_at: datetime, *, user_ids: Any,
                         item_ids: np.ndarray, rec_items: np.ndarray, rec_scores: np.ndarray,
                         user_factors: np.ndarray, attributes: dict[str, np.ndarray],
                         explain_items: np.ndarray | None = None,
                         explain_scores: np.ndarray | None = None) -> UserDocuments:
    """Check the lists and embeddings of some users and prepare their documents.

    Args:
        version, generated_at: stamped on every document.
        user_ids: the users (row order of the arrays).
        item_ids: every item of the model (`ItemDocuments.item_ids`).
        rec_items, rec_scores: (rows, N) lists, -1 padded, and their scores.
        user_factors: (rows, f) embeddings.
        attributes: `attribute_columns` of the checked item attributes.
        explain_items, explain_scores: optional (rows, N, E) explanations.

    Raises:
        InvalidId / PublishError: as `build_item_documents`, for the user arrays.
    """
    version = check_id(version, kind="model version")
    users = _str_ids("user_ids", user_ids)
    item_ids = np.asarray(item_ids, dtype=object)
    rec_idx, scores = np.asarray(rec_items), np.asarray(rec_scores)
    if rec_idx.shape[:1] != (len(users),):
        raise PublishError(f"rec_items: {rec_idx.shape[:1]} rows for {len(users)} users")
    rec_len = _check_ranked("rec_items", rec_idx, scores, len(item_ids))
    return UserDocuments(
        version=version, generated_at=utc(generated_at), user_ids=users, item_ids=item_ids,
        rec_idx=rec_idx, rec_scores=scores, rec_len=rec_len,
        user_factors=_factors("user_factors", user_factors, len(users)),
        _attributes=attributes,
        _explain=_check_explain(explain_items, explain_scores, rec_idx.shape, len(item_ids)))


@dataclass(frozen=True, eq=False)
class VersionDocuments:
    """A checked payload, ready to be turned into documents collection by collection.

    Attributes:
        version: the model version.
        generated_at: when the recommendations were computed (aware UTC).
        users: the user side (`UserDocuments`).
        items: the item side (`ItemDocuments`).
    """

    users: UserDocuments
    items: ItemDocuments

    @property
    def version(self) -> str:
        return self.items.version

    @property
    def generated_at(self) -> datetime:
        return self.items.generated_at

    def documents(self, kind: str) -> Iterator[dict[str, Any]]:
        """The documents of one kind of collection (`recsys.mongo.SERVING_KINDS`), lazily."""
        if kind in USER_KINDS:
            return self.users.documents(kind)
        if kind in ITEM_KINDS:
            return self.items.documents(kind)
        raise ValueError(f"unknown serving collection kind {kind!r}")


def version_fields(items: ItemDocuments, *, n_users: int, list_counts: tuple[np.ndarray, int],
                   explanations: bool) -> dict[str, Any]:
    """``counts``, ``features`` and ``recommendations`` of a version's `model_versions` document.

    Args:
        items: the version's item side.
        n_users: users of the version (all partitions).
        list_counts: the summed `UserDocuments.list_counts` of every partition.
        explanations: the lists carry ``because``.
    """
    n_items = len(items.item_ids)
    return {
        "counts": {"users": n_users, "items": n_items, "recs": n_users, "similar": n_items,
                   "popular": items.popular_len, "factors": items.factors},
        "features": {"item_attributes": sorted(items.attributes), "explanations": explanations},
        "recommendations": stats_from_counts(*list_counts, items.attributes.get("genres")),
    }


def build_documents(payload: PublishPayload) -> VersionDocuments:
    """Check every array of `payload` and prepare its documents (nothing is written).

    Raises:
        InvalidId: the version breaks the id rule.
        PublishError: an array is malformed (index out of range, padding in the middle,
            non-finite score or factor, duplicate ids, bad attribute name or length).
    """
    items = build_item_documents(
        payload.version, payload.generated_at, item_ids=payload.item_ids,
        similar_items=payload.similar_items, similar_scores=payload.similar_scores,
        popular_items=payload.popular_items, popular_scores=payload.popular_scores,
        item_factors=payload.item_factors, attributes=payload.item_attributes)
    users = build_user_documents(
        payload.version, payload.generated_at, user_ids=payload.user_ids,
        item_ids=items.item_ids, rec_items=payload.rec_items, rec_scores=payload.rec_scores,
        user_factors=payload.user_factors, attributes=attribute_columns(items.attributes),
        explain_items=payload.rec_explain_items, explain_scores=payload.rec_explain_scores)
    return VersionDocuments(users=users, items=items)
