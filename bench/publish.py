"""Publishing benchmark: `MongoServingStore.publish` vs bare `insert_many` of the same documents.

    .venv/bin/python bench/publish.py --users 1000000 --items 20000 --top-n 50

Starts its own `secantusd-py` (on-disk, in a temp dir) unless `--uri` is given. The baseline
inserts exactly the documents `publish` writes (recs, similar, popular, user and item
embeddings) with `insert_many(ordered=False)` in the same batch size; only the `insert_many`
calls are timed (documents are built untimed, batch by batch, so memory stays bounded). The
publish time is everything: validation, document building, writes, verification and the
ready flag. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from pymongo import MongoClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from recsys.mongo_server import EmbeddedMongo, free_port  # noqa: E402
from serving import store as serving_store  # noqa: E402
from serving.payload import PublishPayload  # noqa: E402

logger = logging.getLogger("bench.publish")


def make_payload(users: int, items: int, top_n: int, similar_n: int, factors: int,
                 seed: int) -> PublishPayload:
    """Random but valid arrays (vectorised), like a trained model's output."""
    rng = np.random.default_rng(seed)
    rec = rng.integers(0, items, size=(users, top_n), dtype=np.int32)
    rec_scores = -np.sort(-rng.random((users, top_n), dtype=np.float32), axis=1)
    sim = rng.integers(0, items, size=(items, similar_n), dtype=np.int32)
    sim_scores = -np.sort(-rng.random((items, similar_n), dtype=np.float32), axis=1)
    genres = np.array(["Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi"])
    return PublishPayload(
        version="bench", generated_at=datetime.now(UTC),
        user_ids=np.array([f"u{i:08d}" for i in range(users)]),
        item_ids=np.array([f"i{i:06d}" for i in range(items)]),
        rec_items=rec, rec_scores=rec_scores, similar_items=sim, similar_scores=sim_scores,
        user_factors=rng.standard_normal((users, factors), dtype=np.float32),
        item_factors=rng.standard_normal((items, factors), dtype=np.float32),
        popular_items=np.arange(100, dtype=np.int32),
        popular_scores=np.linspace(100, 1, 100, dtype=np.float32),
        item_attributes={"genres": [[str(g)] for g in genres[np.arange(items) % len(genres)]]},
    )


def bare_insert(db, payload: PublishPayload, batch_size: int) -> float:  # type: ignore[no-untyped-def]
    """Seconds spent in insert_many for the same documents publish writes (explanations too)."""
    item_ids = np.asarray([str(x) for x in payload.item_ids.tolist()], dtype=object)
    user_ids = [str(x) for x in payload.user_ids.tolist()]
    n_items = len(item_ids)
    base = {"model_version": "bare", "generated_at": payload.generated_at}
    attrs = serving_store._attribute_values(payload.item_attributes, n_items)
    rec_len = serving_store._check_ranked("rec", payload.rec_items, payload.rec_scores, n_items)
    sim_len = serving_store._check_ranked("sim", payload.similar_items, payload.similar_scores,
                                          n_items)
    pop = payload.popular_items.reshape(1, -1)
    pop_scores = payload.popular_scores.reshape(1, -1)
    explain = payload.rec_explain_items is not None
    sources = {
        "recs": serving_store._ranked_docs(user_ids, payload.rec_items, payload.rec_scores,
                                           rec_len, item_ids, base, attributes=attrs,
                                           explain_idx=payload.rec_explain_items if explain
                                           else None,
                                           explain_scores=payload.rec_explain_scores if explain
                                           else None),
        "similar": serving_store._ranked_docs(list(item_ids), payload.similar_items,
                                              payload.similar_scores, sim_len, item_ids, base,
                                              attributes=attrs),
        "popular": serving_store._ranked_docs(["popular"], pop, pop_scores,
                                              np.array([pop.shape[1]]), item_ids, base,
                                              attributes=attrs),
        "user_embeddings": serving_store._embedding_docs(user_ids, payload.user_factors, "bare"),
        "item_embeddings": serving_store._embedding_docs(list(item_ids), payload.item_factors,
                                                         "bare"),
    }
    spent = 0.0
    for kind, docs in sources.items():
        coll = db[f"{kind}_bare"]
        for batch in serving_store._batches(docs, batch_size):
            t0 = time.perf_counter()
            coll.insert_many(batch, ordered=False)
            spent += time.perf_counter() - t0
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--top-n", type=int, default=50)
    parser.add_argument("--similar-n", type=int, default=20)
    parser.add_argument("--factors", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--uri", help="an existing MongoDB (default: start secantusd-py)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    server = None
    tmp = tempfile.TemporaryDirectory(prefix="bench-publish-")
    uri = args.uri
    if uri is None:
        server = EmbeddedMongo(state_dir=Path(tmp.name), port=free_port(),
                               storage_path=Path(tmp.name) / "db")
        uri = server.start().uri
    client: MongoClient = MongoClient(uri, tz_aware=True)
    try:
        payload = make_payload(args.users, args.items, args.top_n, args.similar_n, args.factors,
                               args.seed)
        client.drop_database("bench_bare")
        client.drop_database("bench_publish")
        logger.info("bare insert_many of %d users x top-%d ...", args.users, args.top_n)
        bare = bare_insert(client["bench_bare"], payload, args.batch_size)
        client.drop_database("bench_bare")
        logger.info("bare: %.1fs; publish ...", bare)
        store = serving_store.MongoServingStore(client["bench_publish"])
        t0 = time.perf_counter()
        store.publish(payload, batch_size=args.batch_size)
        published = time.perf_counter() - t0
        client.drop_database("bench_publish")
        docs = 2 * args.users + 2 * args.items + 1
        print(json.dumps({
            "users": args.users, "items": args.items, "top_n": args.top_n,
            "similar_n": args.similar_n, "factors": args.factors, "batch_size": args.batch_size,
            "documents": docs, "bare_insert_many_s": round(bare, 2),
            "publish_s": round(published, 2), "ratio": round(published / bare, 3),
            "publish_docs_per_s": round(docs / published),
        }))
    finally:
        client.close()
        if server is not None:
            server.stop()
        tmp.cleanup()


if __name__ == "__main__":
    main()
