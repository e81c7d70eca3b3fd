"""Great Expectations plumbing: the lazy import, an ephemeral context built in code, suites,
checkpoints and Data Docs.

Each run gets a new ephemeral context (no files, no analytics): one pandas datasource, and per
table one dataframe asset, batch definition, validation definition and checkpoint. With a
``docs_dir`` the context also gets a filesystem Data Docs site there. GE is imported only here,
and only when a batch is validated: its import takes seconds.

GE's renderers put values such as unexpected values into table cells as they are, so before the
docs are built every stored validation result is sanitised (`_sanitise_stored_results`): each
text in its results and exception messages shortened and HTML-escaped, each list cut
(`ingest.sanitize.html_value`). A value from a batch can neither run as script in the pages nor
grow them with its size.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pandas as pd

from ingest.sanitize import html_value

logger = logging.getLogger(__name__)

_DATASOURCE = "ingest"
_BATCH_DEFINITION = "whole_dataframe"
_DOCS_SITE = "run_docs"


def new_context(gx: Any, docs_dir: Path | None) -> tuple[Any, Any]:
    """A new ephemeral context without progress bars, and its pandas datasource.

    Args:
        gx: the `great_expectations` module (`import_gx`).
        docs_dir: when given, the context builds Data Docs there (`build_docs`).

    Returns:
        ``(context, datasource)``.
    """
    context = gx.get_context(mode="ephemeral")
    _disable_progress_bars(context)
    if docs_dir is not None:
        _add_docs_site(context, Path(docs_dir))
    return context, context.data_sources.add_or_update_pandas(_DATASOURCE)


def import_gx() -> Any:
    """The `great_expectations` module, imported on first use with usage analytics off."""
    # Library switch, not configuration: GE sends usage analytics unless told not to.
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx
    from great_expectations.execution_engine import pandas_execution_engine

    # GE fingerprints every dataframe batch below this many bytes with an MD5 over all its
    # rows, a batch marker nothing here reads: about a fifth of a chunk's validation time.
    # Above the threshold GE skips it by design; 0 makes every batch skip it.
    pandas_execution_engine.HASH_THRESHOLD = 0
    return gx


def _disable_progress_bars(context: Any) -> None:
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context.variables.progress_bars = ProgressBarsConfig(globally=False,
                                                         metric_calculations=False)


def _add_docs_site(context: Any, docs_dir: Path) -> None:
    docs_dir.mkdir(parents=True, exist_ok=True)
    context.add_data_docs_site(_DOCS_SITE, {
        "class_name": "SiteBuilder",
        "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                          "base_directory": str(docs_dir.resolve())},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    })


def build_docs(context: Any, docs_dir: Path) -> str | None:
    """Build the context's Data Docs site from sanitised results; its ``index.html``, or None
    when building failed."""
    try:
        _sanitise_stored_results(context)
        context.build_data_docs(site_names=[_DOCS_SITE])
    except Exception as error:  # noqa: BLE001 - docs are a view; never fail a run on them
        logger.warning("could not build Data Docs in %s: %s", docs_dir, error)
        return None
    index = docs_dir / "index.html"
    return str(index) if index.is_file() else None


def _sanitise_stored_results(context: Any) -> None:
    """Replace every stored validation result by one whose values are safe in HTML."""
    store = context.validation_results_store
    for key in store.list_keys():
        suite_result = store.get(key)
        for result in suite_result.results:
            if result.result:
                result.result = html_value(dict(result.result))
            if result.exception_info:
                result.exception_info = html_value(dict(result.exception_info))
        store.set(key, suite_result)


def load_suite(gx: Any, context: Any, path: Path) -> Any:
    """Add the suite stored in `path` (GE's ExpectationSuite JSON) to `context`.

    Raises:
        FileNotFoundError: `path` does not exist.
    """
    if not path.is_file():
        raise FileNotFoundError(f"expectation suite not found: {path}")
    spec = json.loads(path.read_text(encoding="utf-8"))
    suite = gx.ExpectationSuite(
        name=spec["name"],
        expectations=spec.get("expectations", []),
        meta=spec.get("meta"),
    )
    return context.suites.add(suite)  # a fresh ephemeral context: plain adds are enough


def get_or_create_checkpoint(gx: Any, context: Any, datasource: Any, dataset: str,
                             suite: Any, result_format: dict[str, Any]) -> Any:
    """A checkpoint running `suite` on a whole dataframe of the asset named `dataset`."""
    try:
        asset = datasource.get_asset(dataset)
    except LookupError:
        asset = datasource.add_dataframe_asset(name=dataset)
    try:
        batch_definition = asset.get_batch_definition(_BATCH_DEFINITION)
    except (KeyError, LookupError):
        batch_definition = asset.add_batch_definition_whole_dataframe(_BATCH_DEFINITION)
    # Plain adds: the context is new for every run (add_or_update costs ~1 s of diffing).
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"ingest_{dataset}", data=batch_definition, suite=suite))
    return context.checkpoints.add(
        gx.Checkpoint(name=f"ingest_{dataset}", validation_definitions=[definition],
                      result_format=result_format))


def run_checkpoint(checkpoint: Any, frame: pd.DataFrame, parameters: dict[str, Any]) -> Any:
    """Run `checkpoint` on `frame` with the suite parameters; its one suite result."""
    outcome = checkpoint.run(batch_parameters={"dataframe": frame},
                             expectation_parameters=parameters)
    (result,) = outcome.run_results.values()
    return result
