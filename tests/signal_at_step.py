"""`python tests/signal_at_step.py STEP SIGNAL MAIN_FLAGS...`: runs `learngene_jax.main` and sends its own process
SIGNAL (e.g. SIGTERM, SIGKILL) once, right after the train metrics of step STEP are logged — a kill or a preemption
notice mid-training at a known step, where a parent polling the metrics file may catch any step, or none on a fast
machine that finishes first."""

import os
import signal
import sys

from learngene_jax import main, metrics


def signal_after(step: int, sig: signal.Signals) -> None:
    """Make the train metrics of `step` (logged on every process, written on process 0) send `sig` to this process."""
    write = metrics.MetricWriter.write
    sent = False

    def write_then_signal(self, at: int, split: str, values: dict) -> None:
        nonlocal sent
        write(self, at, split, values)
        if split == "train" and at >= step and not sent:
            sent = True
            os.kill(os.getpid(), sig)

    metrics.MetricWriter.write = write_then_signal


if __name__ == "__main__":
    signal_after(int(sys.argv[1]), signal.Signals[sys.argv[2]])
    sys.argv = [sys.argv[0], *sys.argv[3:]]
    main.run()
