"""What happens to a mover's label: the outcome model, and the true labels tracked beside the recorded ones.

A recipient who implements recourse moves from ``x`` to ``x'``. Two labels matter afterwards: the label the
lender *records* (it enters the next retraining) and the individual's *true* outcome (what the lender will
realise). ``AgentSettings.outcome`` sets both:

========== ============================================ ===========================================
outcome    recorded label (retraining)                  true label after the move
========== ============================================ ===========================================
model      the model's prediction at x' (the reference)  drawn from the true P(y | x')
truth      drawn from the true P(y | x')                 the same draw (the lender sees the truth)
unchanged  the true label before the move                unchanged: the move is gaming
========== ============================================ ===========================================

"model" and "truth" treat the features as causal (a move really changes the chance of a good outcome) and
differ only in what the lender records; "unchanged" and "truth" differ only in whether the move is causal. The
draw is ``y = 1[u_i < P(y = 1 | x')]`` with one uniform ``u_i`` per individual and round shared by every system
(common random numbers: the pairing holds for the outcome too).

The true P(y | x) is a synthetic dataset's generative process (:mod:`recourse_sim.data.truth`, exact) or, for
real data, a fixed oracle classifier fitted once on all rows (semi-synthetic: the oracle *defines* the truth).
Without a truth the true labels of movers are unknown (NaN) under "model", and the truth metrics are not
reported; under "unchanged" they are the data's labels and always known.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from recourse_sim.data.dataset import Dataset
from recourse_sim.data.truth import TruthModel, fit_oracle
from recourse_sim.models.base import DECISION_THRESHOLD
from recourse_sim.simulation.agents import AgentSettings

#: The spawn key of the oracle's seed (see :func:`resolve_truth`), apart from the agents' stream.
_ORACLE_STREAM = 2


def resolve_truth(settings: AgentSettings, train: Dataset, test: Dataset, seed: int,
                  device: torch.device) -> TruthModel | None:
    """The true P(y | x) the run uses under ``settings.truth`` (see :class:`AgentSettings`)."""
    source = settings.truth
    if source == "auto":
        source = "exact" if train.truth is not None else "oracle" if settings.outcome == "truth" else "none"
    if source == "none":
        return None
    if source == "exact":
        settings.check_data(train)
        return train.truth
    oracle_seed = int(np.random.SeedSequence(seed, spawn_key=(_ORACLE_STREAM,)).generate_state(1)[0])
    rows, labels = torch.cat([train.X, test.X]), torch.cat([train.y, test.y])
    return fit_oracle(rows, labels, seed=oracle_seed, device=str(device))


@dataclass
class OutcomeModel:
    """Labels of movers under ``outcome`` with ``truth`` (None: no true P(y | x) known)."""

    outcome: str
    truth: TruthModel | None

    @property
    def tracks_truth(self) -> bool:
        """Whether every individual's true label is known at every round (the truth metrics need it)."""
        return self.truth is not None or self.outcome == "unchanged"

    def labels(self, x_new: torch.Tensor, p_model: torch.Tensor, y_true: torch.Tensor,
               outcome_draw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(recorded, true)`` labels (float, same shape as ``p_model``) of individuals moving to ``x_new``.

        ``p_model``: the model's p(y = 1) at ``x_new``; ``y_true``: their true labels before the move (NaN where
        unknown); ``outcome_draw``: their uniform draws ``u_i`` of this round.
        """
        if self.outcome == "unchanged":
            return y_true.clone(), y_true.clone()
        if self.truth is not None:
            drawn = (outcome_draw < self.truth.proba(x_new)).to(p_model.dtype)
        else:
            drawn = torch.full_like(p_model, float("nan"))
        if self.outcome == "truth":
            return drawn, drawn.clone()
        return (p_model >= DECISION_THRESHOLD).to(p_model.dtype), drawn
