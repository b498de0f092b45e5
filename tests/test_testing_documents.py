"""The recorded Nextmv documents are what the fake answers, and the official SDK reads them."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from nextmv import Run as ListedRun
from nextmv import RunInformation, RunLog, RunResult, StatusV2, TimestampedRunLog
from nextmv.cloud import Application, Client, DownloadURL, UploadURL
from nextmv_documents import DOCUMENTS, STABLE_BASE_URL, load, names, record
from pydantic import BaseModel

RECORD = os.environ.get("LISTENER_RECORD_DOCUMENTS") == "1"


async def test_the_recorded_documents_are_what_the_fake_answers() -> None:
    fresh = await record()
    if RECORD:
        DOCUMENTS.mkdir(parents=True, exist_ok=True)
        for stale in DOCUMENTS.glob("*.json"):
            stale.unlink()
        for name, document in fresh.items():
            text = json.dumps(document, indent=2, sort_keys=True) + "\n"
            (DOCUMENTS / f"{name}.json").write_text(text)
    assert sorted(fresh) == names()
    for name in names():
        assert load(name) == fresh[name], f"{name}.json differs from the fake's answer"


def sdk_models() -> dict[str, Any]:
    client = Client(api_key="recorded", url=STABLE_BASE_URL)
    return {
        "metadata_": RunInformation,
        "result_": RunResult,
        "logs": RunLog,
        "upload_url": UploadURL,
        "output_url": DownloadURL,
        "application": lambda doc: Application.model_validate({"client": client} | doc),
    }


@pytest.mark.parametrize(
    "name", [n for n in names() if n.startswith(("metadata_", "result_"))] + ["logs", "upload_url"]
)
def test_documents_validate_against_the_sdk_models(name: str) -> None:
    model = next(m for prefix, m in sdk_models().items() if name.startswith(prefix))
    parsed = model(**load(name)) if isinstance(model, type) else model(load(name))
    assert isinstance(parsed, BaseModel)


def test_listed_runs_are_the_sdk_run_model() -> None:
    for page in ("runs_page", "runs_page_next"):
        for run in load(page)["runs"]:
            assert isinstance(ListedRun.model_validate(run).status_v2, StatusV2)
    assert isinstance(load("runs_page")["next_page_token"], str)
    assert load("runs_page_next")["next_page_token"] is None


def test_the_other_documents_validate_against_the_sdk_models() -> None:
    assert DownloadURL.model_validate(load("output_url")).url.startswith(STABLE_BASE_URL)
    models = sdk_models()
    assert models["application"](load("application")).id == "routing"
    live = load("live_logs")
    assert [TimestampedRunLog.model_validate(item).log for item in live["items"]] == [
        "reading",
        "solving",
    ]
    assert StatusV2(live["status_v2"]) is StatusV2.failed


def test_the_tracked_failure_kept_what_was_tracked() -> None:
    result = RunResult.model_validate(load("result_tracked_failed"))
    assert result.metadata.status_v2 is StatusV2.failed
    assert result.metadata.error == "out of memory"
    assert result.output is None  # a failed run's output is read from its output route
    assert result.metadata.run_type is not None
    assert result.metadata.run_type.run_type is not None
    assert result.metadata.run_type.run_type.value == "external"
