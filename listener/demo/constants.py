"""The demo's fixed numbers: application, loss rates, time layout, timeouts, names."""

APPLICATION = "routing"
SOURCE = "nextmv"
DROP_RATE = 0.25
DUPLICATE_RATE = 0.10
# One platform second lasts this long here: runs of a few seconds to two minutes of
# platform time play out in well under ten seconds.
TIME_SCALE = 0.05
# Wall-clock layout, in seconds from the first submission. LEAD leaves time to submit
# every run before the first one starts; GAP keeps status changes apart so their order,
# and hence which webhooks the seeded platform drops, never depends on scheduling noise.
LEAD = 0.8
GAP = 0.15
MAX_WINDOW = 12.0
# How long after the last status change the poller may first ask about a run.
MARGIN = 1.0
PROGRESS_EVERY = 2.5
SETTLE_TIMEOUT = 20.0
WIDTH = 78

COUNT_HANDLER = "demo.count_calls"
LOG_HANDLER = "demo.log_transition"

# Shares of runs the platform ends failed and canceled; the rest succeed.
FAILED_SHARE = 0.2
CANCELED_SHARE = 0.05
