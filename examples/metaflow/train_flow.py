"""A Metaflow flow that reports its end to the listener through the exit hook.

`start` makes `rows` numbers, `end` sums them; `fail` makes `start` raise, to see a
failure reported with its error. Run it through the listener (see README.md) or directly
(`python train_flow.py run --rows 5`); either way the hook signs and POSTs the end to
$LISTENER_WEBHOOK_URL when that is set, and prints one line saying how it went.
"""

# Metaflow adds its decorators and parameter values at run time, past its type hints.
# mypy: disable-error-code="attr-defined, no-untyped-call, arg-type, operator, call-overload"

from metaflow import FlowSpec, Parameter, exit_hook, step

NOTIFY = "listener.integrations.metaflow.notify"


@exit_hook(on_success=[NOTIFY], on_error=[NOTIFY])
class TrainFlow(FlowSpec):
    rows = Parameter("rows", type=int, default=10, help="How many numbers to make.")
    fail = Parameter("fail", type=bool, default=False, help="Raise in the first step.")

    @step
    def start(self) -> None:
        if self.fail:
            raise RuntimeError("no training data")
        self.numbers = list(range(self.rows))
        self.next(self.end)

    @step
    def end(self) -> None:
        self.total = sum(self.numbers)


if __name__ == "__main__":
    TrainFlow()
