"""Metaflow flows: started with its `Runner`, their end pushed by an exit hook, read back
through its client.

Install with ``pip install 'listener[metaflow]'``. A run's id is its pathspec; its
application the flow file it was submitted as (or, for a run tracked by pathspec, the
flow's name). Flows report their end with
:func:`listener.integrations.metaflow.notify` as an exit hook, to a Standard Webhooks
source reading provider ``metaflow``; without one, the poller asks the client. This
module imports Metaflow only when a provider is used, so the kind is always listed.
"""

from __future__ import annotations

from typing import Final

from listener.providers.flow_runner import STATUS_WORDS
from listener.providers.kinds import ProviderKind
from listener.providers.metaflow.provider import MetaflowProvider, parse_event

__all__ = ["KIND", "MetaflowProvider", "parse_event"]

KIND: Final = ProviderKind(
    name="metaflow",
    factory=MetaflowProvider,
    parse_event=parse_event,
    status_words=STATUS_WORDS,
)
