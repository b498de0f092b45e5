"""A two-step flow for the tests: `start` doubles `n` (after `sleep` seconds, and raises
when `fail` is set or $HELLO_FAIL is), `end` adds one. Its exit hook reports to the
listener."""

# Metaflow adds its decorators and parameter values at run time, past its type hints.
# mypy: disable-error-code="attr-defined, no-untyped-call, arg-type, operator"

import os
import time

from metaflow import FlowSpec, Parameter, exit_hook, step

NOTIFY = "listener.integrations.metaflow.notify"


@exit_hook(on_success=[NOTIFY], on_error=[NOTIFY])
class HelloFlow(FlowSpec):
    n = Parameter("n", type=int, default=1)
    fail = Parameter("fail", type=bool, default=False)
    sleep = Parameter("sleep", type=float, default=0.0)

    @step
    def start(self) -> None:
        time.sleep(self.sleep)
        if self.fail or os.environ.get("HELLO_FAIL"):
            raise ValueError(f"boom {self.n}")
        self.doubled = self.n * 2
        self.next(self.end)

    @step
    def end(self) -> None:
        self.total = self.doubled + 1


if __name__ == "__main__":
    HelloFlow()
