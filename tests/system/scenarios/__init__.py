"""Runnable reliability scenarios, shared by the system tests and `bench/reliability.py`."""

from __future__ import annotations

from .chaos import ChaosSettings, run_chaos
from .common import Tally, assert_held
from .crash import CrashSettings, run_crash
from .hostile import HostileSettings, run_hostile
from .outage import OutageSettings, run_postgres_outage, run_sqlite_outage
from .replicas import ReplicaSettings, run_replicas
from .witness import Witness, capture_all_logs

__all__ = [
    "ChaosSettings",
    "CrashSettings",
    "HostileSettings",
    "OutageSettings",
    "ReplicaSettings",
    "Tally",
    "Witness",
    "assert_held",
    "capture_all_logs",
    "run_chaos",
    "run_crash",
    "run_hostile",
    "run_postgres_outage",
    "run_replicas",
    "run_sqlite_outage",
]
