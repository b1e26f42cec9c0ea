"""The search loop's overhead: host reads per step, the ``on_step`` hook, the optional compiled step."""

from __future__ import annotations

import math

import pytest
import torch
from torch.overrides import TorchFunctionMode

from recourse_sim.generators import GENERATORS, SearchSettings, make_context, search
from recourse_sim.generators.engine import yloss

# Tensor methods that read a value back to the host (a device sync on CUDA).
HOST_READS = {"__bool__", "__int__", "__float__", "__index__", "__array__", "item", "tolist", "nonzero", "numpy",
              "cpu", "equal", "allclose"}


class CountHostReads(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in HOST_READS:
            self.reads.append(name)
        return func(*args, **(kwargs or {}))


def _negatives(model, dataset, n: int) -> torch.Tensor:
    return dataset.X[model.predict(dataset.X) == 0][:n]


def _mixed_call(model, dataset, n: int = 24):
    """Five systems, two strategies, every convergence rule and both ylosses: the host-side flags are masks."""
    specs = [
        GENERATORS["generic"](threshold=0.9999, max_steps=60),  # never converges: the loop runs to the cap
        GENERATORS["generic"](max_steps=60).replace(name="generic-entropy", yloss="entropy"),
        GENERATORS["gravitational"](max_steps=40),
        GENERATORS["eccco"](max_steps=50),
        GENERATORS["greedy"](max_steps=30),
    ]
    S = len(specs)
    factual = _negatives(model, dataset, n).expand(S, -1, -1)
    context = make_context(dataset, "cpu", data_X=dataset.X.expand(S, -1, -1), data_y=dataset.y.expand(S, -1))
    return model.select_systems([0] * S), factual, specs, context


@pytest.mark.parametrize("check_every", [1, 4, 25])
def test_the_loop_reads_the_device_only_every_check_every_steps(fitted_mlp_4d, four_d, check_every):
    """Per strategy group: at most one host read per check (every ``check_every`` steps and at t = 0) plus a
    constant for the set-up; the convergence rules and the yloss are chosen on the host, not per step."""
    model, factual, specs, context = _mixed_call(fitted_mlp_4d, four_d)
    iterations = []
    settings = SearchSettings(n_counterfactuals=2, check_every=check_every)
    rng = torch.Generator().manual_seed(0)
    with CountHostReads() as counter:
        search(model, factual, specs, context, settings=settings, rng=rng, on_step=lambda r: iterations.append(r.t))
    groups = sum(t == 0 for t in iterations)
    assert groups == 2  # gradient and greedy
    checks = sum(t % check_every == check_every - 1 or t == 0 for t in iterations)
    assert len(iterations) >= 61 + 31 - 2  # the never-converging system keeps its group's loop running
    assert len(counter.reads) <= checks + 6 * groups + 2, counter.reads
    if check_every > 1:
        assert len(counter.reads) < len(iterations)  # fewer reads than steps


@pytest.mark.parametrize("mixed", [True, False])
def test_on_step_sees_every_step_and_changes_nothing(fitted_mlp_4d, four_d, mixed):
    """Mixed: four systems, one never converging (the loop runs to its cap); plain: one generic system whose
    individuals converge, so the working batch is compacted along the way."""
    if mixed:
        model, factual, specs, context = _mixed_call(fitted_mlp_4d, four_d)
        model, factual, specs = model.select_systems([0, 1, 2, 3]), factual[:4], specs[:4]  # one strategy
        context = make_context(four_d, "cpu", data_X=four_d.X.expand(4, -1, -1), data_y=four_d.y.expand(4, -1))
    else:
        model, factual = fitted_mlp_4d, _negatives(fitted_mlp_4d, four_d, 40).unsqueeze(0)
        specs, context = [GENERATORS["generic"](threshold=0.6, max_steps=200)], make_context(four_d, "cpu")
    settings = SearchSettings(n_counterfactuals=3, check_every=3)
    # A hooked search runs the torch loop (the compiled backend has no steps to show), so compare with it.
    plain = search(model, factual, specs, context, settings=settings, rng=torch.Generator().manual_seed(5),
                   backend="torch")
    records = []

    def hook(record):
        records.append(record)
        record.x.sum()  # a hook that computes something must not disturb the search

    hooked = search(model, factual, specs, context, settings=settings, rng=torch.Generator().manual_seed(5),
                    on_step=hook)
    for field in ("counterfactuals", "proba", "converged", "steps"):
        assert torch.equal(getattr(plain, field), getattr(hooked, field)), field
    assert [r.t for r in records] == list(range(len(records)))
    S, B, K, d = plain.counterfactuals.shape
    counted = torch.zeros(S, B, dtype=torch.long)
    compacted = False
    for r in records:
        B_active = r.index.numel()
        compacted |= B_active < B
        assert r.x.shape == (S, B_active, K, d) and r.log_p.shape == (S, B_active, K)
        assert r.loss.shape == r.active.shape == (S, B_active)
        assert not (r.x.requires_grad or r.log_p.requires_grad or r.loss.requires_grad)
        counted[:, r.index] += r.active
    assert torch.equal(counted, plain.steps)  # every step an individual took was reported as active
    if mixed:
        assert len(records) == 61  # the never-converging system runs to its cap of 60 steps
    else:
        assert compacted  # the records follow the working batch through a compaction
        if plain.converged.all():  # the loop stops within one check of the last individual's convergence
            assert len(records) <= int(plain.steps.max()) + 3
    # The candidates of the first record are the projected starting points, scored as the result scores them.
    first = records[0]
    torch.testing.assert_close(first.log_p, model.log_proba_stacked(first.x.reshape(S, -1, d)).view(S, B, K))


def test_yloss_flag_on_the_host_matches_the_mask():
    log_p = torch.log(torch.rand(3, 7, 2, generator=torch.Generator().manual_seed(0)).clamp_min(1e-3))
    mask = torch.tensor([[True], [False], [True]])
    mixed = yloss(log_p, mask)
    assert torch.equal(mixed[0], yloss(log_p, True)[0]) and torch.equal(mixed[1], yloss(log_p, False)[1])
    assert torch.equal(yloss(log_p, None), -log_p.mean(-1))
    p = log_p.exp()
    expected = -(p * log_p + (1 - p) * torch.log1p(-p)).mean(-1)
    torch.testing.assert_close(yloss(log_p, True), expected, atol=1e-5, rtol=0)
    assert math.isfinite(float(yloss(torch.zeros(1, 1, 1), True)))


def test_compile_falls_back_to_autograd(fitted_mlp_4d, four_d, monkeypatch):
    factual = _negatives(fitted_mlp_4d, four_d, 10).unsqueeze(0)
    context = make_context(four_d, "cpu")
    spec = [GENERATORS["generic"]()]
    eager = search(fitted_mlp_4d, factual, spec, context, rng=torch.Generator().manual_seed(1), backend="torch")

    def broken(*args, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", broken)
    with pytest.warns(RuntimeWarning, match="torch.compile unavailable"):
        fallback = search(fitted_mlp_4d, factual, spec, context, settings=SearchSettings(compile=True),
                          rng=torch.Generator().manual_seed(1))
    assert torch.equal(eager.counterfactuals, fallback.counterfactuals) and torch.equal(eager.steps, fallback.steps)


@pytest.mark.slow
def test_compiled_step_matches_autograd(fitted_mlp_4d, four_d):
    """``SearchSettings(compile=True)`` (seconds of compilation): the same search within float tolerance, and
    bit-identical across reruns."""
    model, factual, specs, context = _mixed_call(fitted_mlp_4d, four_d)
    settings = SearchSettings(n_counterfactuals=2)
    runs = [search(model, factual, specs, context, settings=s, rng=torch.Generator().manual_seed(2))
            for s in (settings, SearchSettings(n_counterfactuals=2, compile=True),
                      SearchSettings(n_counterfactuals=2, compile=True))]
    eager, compiled, again = runs
    torch.testing.assert_close(compiled.counterfactuals, eager.counterfactuals, atol=1e-4, rtol=0)
    assert (compiled.steps - eager.steps).abs().max() <= 1
    assert torch.equal(compiled.counterfactuals, again.counterfactuals) and torch.equal(compiled.steps, again.steps)
