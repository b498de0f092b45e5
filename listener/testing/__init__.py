"""Test helpers: a fake Nextmv-compatible platform on loopback, and signed-event builders.

:class:`FakePlatform` serves the Nextmv run and webhook API on ``127.0.0.1`` (an ephemeral
port, in the running event loop) closely enough that a client written against the real API
works unchanged. Runs follow a :class:`RunPlan`; each status change is POSTed as a signed
``run.status`` webhook to every registered endpoint, with knobs to drop, duplicate, delay and
reorder deliveries and to fail API calls, all driven by one seeded ``random.Random``::

    from listener.providers.base import Submission
    from listener.testing import FakePlatform, RunPlan

    async def test_runs_finish(receiver_url: str) -> None:
        async with FakePlatform(plan=RunPlan(runs_for=2.0), time_scale=0.001) as platform:
            secret = platform.register_webhook(receiver_url)  # the endpoint under test
            async with platform.nextmv_provider() as provider:
                run_id = await provider.submit(Submission("routing", {"stops": 3}))
                await platform.drain()  # every finite run ended, every delivery settled
                assert (await provider.status("routing", run_id)).status == "succeeded"
            assert platform.deliveries[0].delivered

:func:`signed_delivery` and :func:`nextmv_run_status_payload` build single deliveries for
receiver tests without a platform. :class:`LoopbackServer` serves any ASGI app the same way.
:class:`FakeNoxusEngine` does for the Noxus workflow engine what :class:`FakePlatform` does
for Nextmv, speaking the official `noxus-sdk` client's API (see
:mod:`listener.testing.noxus_engine`).
"""

from listener.sending import signed_delivery
from listener.testing.loopback import LoopbackServer
from listener.testing.noxus_engine import FakeNoxusEngine
from listener.testing.noxus_runs import NoxusPlan, NoxusRun
from listener.testing.payloads import nextmv_run_status_payload
from listener.testing.platform import FakePlatform
from listener.testing.records import ApiFailure, DeliveryRecord, DeliveryStats, FakeRun, RunPlan

__all__ = [
    "ApiFailure",
    "DeliveryRecord",
    "DeliveryStats",
    "FakeNoxusEngine",
    "FakePlatform",
    "FakeRun",
    "LoopbackServer",
    "NoxusPlan",
    "NoxusRun",
    "RunPlan",
    "nextmv_run_status_payload",
    "signed_delivery",
]
