"""Test-only plugins for tests that drive a real `gibench run` process (``python -m tests.runner_plugins run ...``).

``gate``: a regularizer (plain cross-entropy) whose first training step waits on a sentinel: it creates
``$GIBENCH_TEST_GATE/started`` and then blocks until ``$GIBENCH_TEST_GATE/open`` exists. A test can thus stop a run
at a known point (every earlier job committed, this one in flight) without guessing at timings.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch.nn.functional as F

from gibench.api.plugin import Regularizer, TrainingLoss


class Gate(Regularizer):
    zero_strength = None

    def training_loss(self, model, x, y):
        gate = Path(os.environ["GIBENCH_TEST_GATE"])
        (gate / "started").touch()
        while not (gate / "open").exists():
            time.sleep(0.05)
        loss = F.cross_entropy(model(x), y)
        return TrainingLoss(loss, {"cross_entropy": loss.detach()})


def main() -> int:
    from gibench.api import registry
    from gibench.cli import main as cli

    registry.regularizers.register("gate", Gate)
    return cli(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
