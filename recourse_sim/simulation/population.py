"""The population of every system as stacked tensors, and the paired choice of who receives recourse."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Population:
    """Training data of S systems, ``X`` (S, n, d) and ``y`` (S, n): row i is the same individual everywhere.

    ``recourse_round`` (S, n) records the last round in which each individual implemented recourse (-1: never).
    ``y_true`` (S, n) are the individuals' true labels (the data's at the start; NaN where unknown), which the
    recorded ``y`` follows only under some outcome models (see :mod:`recourse_sim.simulation.outcome`).
    """

    X: torch.Tensor
    y: torch.Tensor
    recourse_round: torch.Tensor
    y_true: torch.Tensor

    @classmethod
    def replicate(cls, X: torch.Tensor, y: torch.Tensor, n_systems: int) -> Population:
        return cls(
            X=X.unsqueeze(0).repeat(n_systems, 1, 1),
            y=y.unsqueeze(0).repeat(n_systems, 1),
            recourse_round=torch.full((n_systems, X.shape[0]), -1, dtype=torch.long, device=X.device),
            y_true=y.unsqueeze(0).repeat(n_systems, 1),
        )

    def move(self, systems: torch.Tensor, rows: torch.Tensor, x_new: torch.Tensor, y_new: torch.Tensor, round_: int,
             y_true: torch.Tensor | None = None) -> None:
        """Individuals ``rows`` of ``systems`` (flat, paired) move to ``x_new`` and take the recorded label
        ``y_new`` and the true label ``y_true`` (default: ``y_new``)."""
        self.X[systems, rows] = x_new
        self.y[systems, rows] = y_new
        self.y_true[systems, rows] = y_new if y_true is None else y_true
        self.recourse_round[systems, rows] = round_


def choose_recipients(
    predicted_negative: torch.Tensor, groups: list[torch.Tensor], share: float, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick ``round(share * |candidates|)`` recipients per group of systems, without replacement.

    ``predicted_negative`` (S, n) is each system's current prediction on its own data; a group (e.g. one
    repetition) shares its recipients, drawn from the individuals predicted negative by *every* system in it
    (AlgorithmicRecourseDynamics.jl v0.1.2 ``intersect_=true``). Returns ``rows`` (S, B) and ``valid`` (S, B):
    groups with fewer recipients are padded (with their first row) and masked, so every system has B columns.
    """
    S = predicted_negative.shape[0]
    chosen: list[np.ndarray] = [np.empty(0, dtype=np.int64)] * S
    for members in groups:
        candidates = np.flatnonzero(predicted_negative[members].all(0).cpu().numpy())
        n_chosen = int(round(share * candidates.size))  # Python's round, like Julia's, rounds half to even
        picked = np.sort(rng.choice(candidates, size=n_chosen, replace=False)) if n_chosen else candidates[:0]
        for s in members.tolist():
            chosen[s] = picked
    width = max(len(c) for c in chosen)
    rows = np.zeros((S, width), dtype=np.int64)
    valid = np.zeros((S, width), dtype=bool)
    for s, picked in enumerate(chosen):
        rows[s, : len(picked)] = picked
        rows[s, len(picked) :] = picked[0] if len(picked) else 0
        valid[s, : len(picked)] = True
    device = predicted_negative.device
    return torch.from_numpy(rows).to(device), torch.from_numpy(valid).to(device)
