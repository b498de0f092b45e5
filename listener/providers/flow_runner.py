"""The status words a flow runner (a Metaflow-style `Runner`) reports for its runs.

The `metaflow` provider kind declares it as its status words; it lives here, beside the
providers, for any other flow runner with the same vocabulary.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from listener.events import RunStatus, status_from_words

__all__ = ["STATUS_WORDS", "status_from_flow_runner"]

STATUS_WORDS: Final[Mapping[str, RunStatus]] = {
    "queued": RunStatus.QUEUED,
    "running": RunStatus.RUNNING,
    "successful": RunStatus.SUCCEEDED,
    "failed": RunStatus.FAILED,
    # A flow that ran out of time did not produce its result: a failure, not a cancel.
    "timeout": RunStatus.FAILED,
    "canceled": RunStatus.CANCELED,
}


def status_from_flow_runner(word: object) -> RunStatus:
    """Map a flow runner's run status word (`successful`, `timeout`, ...)."""
    return status_from_words("flow-runner", STATUS_WORDS, word)
