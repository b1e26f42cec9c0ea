"""Start-up: what importing the package and the CLI's commands load, and the shortcuts that make it fast keep
the behaviour they replace (issue 12). The times themselves are measured by ``benchmarks/startup.py``."""

from __future__ import annotations

import gc
import inspect
import json
import subprocess
import sys

from recourse_sim import cli


def _python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout


def test_importing_the_package_loads_none_of_the_heavy_libraries():
    loaded = json.loads(_python(
        "import json, sys, recourse_sim, recourse_sim.cli\n"
        "print(json.dumps(sorted(m for m in ('torch', 'mesa', 'pandas', 'matplotlib', 'numba', 'scipy', 'ray', "
        "'solara') if m in sys.modules)))"))
    assert loaded == []


def test_mesa_imported_by_the_model_names_its_loggers_as_a_plain_import_does():
    """The model imports Mesa with a cheaper module lookup for Mesa's loggers; the loggers must be the same."""
    listing = ("import json, logging\n"
               "print(json.dumps(sorted(n for n in logging.root.manager.loggerDict if n.startswith('MESA'))))")
    plain = json.loads(_python(f"import torch, mesa\n{listing}"))
    via_model = json.loads(_python(f"import recourse_sim.simulation.model\n{listing}"))
    assert "MESA.mesa.model" in plain
    assert via_model == plain


def test_the_module_lookup_is_restored_after_mesa_is_imported():
    from recourse_sim.simulation import model

    stack, getmodule = inspect.stack, inspect.getmodule
    with model._cheap_module_lookup():
        frame = inspect.currentframe()
        assert inspect.getmodule(frame) is sys.modules[__name__]
        assert inspect.stack()[0].code_context is None  # no source lines read
    assert (inspect.stack, inspect.getmodule) == (stack, getmodule)
    assert inspect.stack()[0].code_context is not None


def test_long_lived_imports_pause_the_collector_and_freeze_what_they_created():
    enabled = gc.isenabled()
    try:
        for state in (True, False):
            (gc.enable if state else gc.disable)()
            with cli._long_lived_imports():
                assert not gc.isenabled()
                created = [[]]  # an object made "during the import"
            assert gc.isenabled() is state  # the caller's setting comes back
            assert gc.get_freeze_count() >= len(created)
    finally:
        gc.unfreeze()
        (gc.enable if enabled else gc.disable)()
