"""A one-step flow whose exit hook reports its end twice: the same delivery, sent again."""

# Metaflow adds its decorators and parameter values at run time, past its type hints.
# mypy: disable-error-code="attr-defined, no-untyped-call"

from metaflow import FlowSpec, exit_hook, step

NOTIFY = "listener.integrations.metaflow.notify"


@exit_hook(on_success=[NOTIFY, NOTIFY], on_error=[NOTIFY, NOTIFY])
class TwiceFlow(FlowSpec):
    @step
    def start(self) -> None:
        self.next(self.end)

    @step
    def end(self) -> None:
        self.done = True


if __name__ == "__main__":
    TwiceFlow()
