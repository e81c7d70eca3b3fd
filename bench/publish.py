"""Publishing benchmark: `write_payload_version` vs bare `insert_many` of the same documents.

    python -m bench publish --users 1000000 --items 20000 --top-n 50 [--explain-n 3]

Starts its own `secantusd-py` (on-disk, in a temp dir) unless `--uri` is given. The baseline
inserts exactly the documents the publish writes (recs, similar, popular, user and item
embeddings; built by `serving.documents.build_documents`, as
`serving.version_writer.write_payload_version` builds them) with
`insert_many(ordered=False)` in the same batch size; only the `insert_many` calls are timed
(documents are built untimed, batch by batch, so memory stays bounded). The publish time is
everything: validation, document building, writes, verification and the ready flag. Prints one
JSON line, with the load average before and after each side (the machine is shared: compare
ratios measured in one run, and the load they ran under). `--explain-n` adds explaining items
to every recommendation, as the pipeline's documents have them (`RECSYS_EXPLAIN_N`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from pymongo import MongoClient
from pymongo.database import Database

from recsys.mongo import SERVING_KINDS, serving_collection
from recsys.mongo_server import EmbeddedMongo, free_port
from serving.documents import batches, build_documents
from serving.payload import PublishPayload
from serving.version_writer import write_payload_version

logger = logging.getLogger("bench.publish")

VERSION = "bench"


def make_payload(users: int, items: int, top_n: int, similar_n: int, factors: int,
                 seed: int, explain_n: int = 0) -> PublishPayload:
    """Random but valid arrays (vectorised), like a trained model's output, as version "bench"
    (with `explain_n` > 0: that many explaining items per recommendation)."""
    rng = np.random.default_rng(seed)
    explain: dict[str, np.ndarray] = {}
    if explain_n > 0:
        explain["rec_explain_items"] = rng.integers(0, items, size=(users, top_n, explain_n),
                                                    dtype=np.int32)
        explain["rec_explain_scores"] = -np.sort(
            -rng.random((users, top_n, explain_n), dtype=np.float32), axis=2)
    rec = rng.integers(0, items, size=(users, top_n), dtype=np.int32)
    rec_scores = -np.sort(-rng.random((users, top_n), dtype=np.float32), axis=1)
    sim = rng.integers(0, items, size=(items, similar_n), dtype=np.int32)
    sim_scores = -np.sort(-rng.random((items, similar_n), dtype=np.float32), axis=1)
    genres = np.array(["Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi"])
    return PublishPayload(
        version=VERSION, generated_at=datetime.now(UTC),
        user_ids=np.array([f"u{i:08d}" for i in range(users)]),
        item_ids=np.array([f"i{i:06d}" for i in range(items)]),
        rec_items=rec, rec_scores=rec_scores, similar_items=sim, similar_scores=sim_scores,
        user_factors=rng.standard_normal((users, factors), dtype=np.float32),
        item_factors=rng.standard_normal((items, factors), dtype=np.float32),
        popular_items=np.arange(100, dtype=np.int32),
        popular_scores=np.linspace(100, 1, 100, dtype=np.float32),
        item_attributes={"genres": [[str(g)] for g in genres[np.arange(items) % len(genres)]]},
        **explain,
    )


def bare_insert(db: Database, payload: PublishPayload, batch_size: int) -> tuple[float, int]:
    """Insert the documents `write_payload_version` writes for `payload` into `db`, timing only
    the inserts.

    The raw baseline of publishing: the same documents (built untimed, batch by batch), written
    with `insert_many(ordered=False)` in batches of `batch_size` into collections of the same
    names, without the version registry, verification or pointer.

    Returns:
        The seconds spent in `insert_many` and the number of documents inserted.
    """
    documents = build_documents(payload)
    spent, inserted = 0.0, 0
    for kind in SERVING_KINDS:
        collection = db[serving_collection(kind, documents.version)]
        for batch in batches(documents.documents(kind), batch_size):
            started = time.perf_counter()
            collection.insert_many(batch, ordered=False)
            spent += time.perf_counter() - started
            inserted += len(batch)
    return spent, inserted


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The `python -m bench publish` command line."""
    parser = argparse.ArgumentParser(prog="python -m bench publish",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--top-n", type=int, default=50)
    parser.add_argument("--similar-n", type=int, default=20)
    parser.add_argument("--factors", type=int, default=32)
    parser.add_argument("--explain-n", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--uri", help="an existing MongoDB (default: start secantusd-py)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Publish a generated payload, then insert the same documents bare; print the figures."""
    args = parse_args(argv)
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
                               args.seed, args.explain_n)
        client.drop_database("bench_bare")
        client.drop_database("bench_publish")
        logger.info("bare insert_many of %d users x top-%d ...", args.users, args.top_n)
        load = {"bare_start": os.getloadavg()[0]}
        bare, docs = bare_insert(client["bench_bare"], payload, args.batch_size)
        load["bare_end"] = os.getloadavg()[0]
        client.drop_database("bench_bare")
        logger.info("bare: %.1fs; publish ...", bare)
        load["publish_start"] = os.getloadavg()[0]
        started, cpu = time.perf_counter(), time.process_time()
        write_payload_version(client["bench_publish"], payload, batch_size=args.batch_size)
        published, cpu = time.perf_counter() - started, time.process_time() - cpu
        load["publish_end"] = os.getloadavg()[0]
        client.drop_database("bench_publish")
        print(json.dumps({
            "users": args.users, "items": args.items, "top_n": args.top_n,
            "similar_n": args.similar_n, "factors": args.factors, "explain_n": args.explain_n,
            "batch_size": args.batch_size, "documents": docs,
            "bare_insert_many_s": round(bare, 2), "publish_s": round(published, 2),
            "ratio": round(published / bare, 3), "publish_docs_per_s": round(docs / published),
            "publish_client_cpu_s": round(cpu, 2),
            "load_average_1m": {k: round(v, 2) for k, v in load.items()},
        }))
    finally:
        client.close()
        if server is not None:
            server.stop()
        tmp.cleanup()


if __name__ == "__main__":
    main()
