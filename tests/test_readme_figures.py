"""The README's measured figures are generated, and stay true.

`docs/readme_figures.py` records them in `docs/figures.json`, per CPU model
and JAX and Keras versions, and writes the README's tables from there.
These tests check that the README shows a record of that file, and that
the README's main job, run by the suite, prints the figures recorded for
the CPU and versions it runs on.
"""

import importlib.util
import json
import os
import re

import pytest

from tests.helpers import ROOT


def _script():
    spec = importlib.util.spec_from_file_location(
        "readme_figures", os.path.join(ROOT, "docs", "readme_figures.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _block(text, name):
    match = re.search(
        rf"<!-- figures:{name} -->\n(.*?)<!-- /figures:{name} -->", text, re.S
    )
    assert match, f"README.md lost its {name!r} markers"
    return match.group(1).strip()


def test_every_readme_table_is_a_record_of_the_figures_file():
    script = _script()
    figures = script.read_figures()
    assert figures, "docs/figures.json is missing: run python docs/readme_figures.py"
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    names = ["compare", "inference_modes", "quick_grid"]
    names += [n for n in script.TABLES if n not in names and f"figures:{n} " in readme]
    for name in names:
        table = script.TABLES[name]
        shown = _block(readme, name)
        made = []
        for record in figures.values():
            try:
                made.append(table(record).strip())
            except KeyError:  # that record has no such figure
                continue
        assert shown in made, f"README's {name!r} table is not generated"


@pytest.mark.slow  # reads the README's main job, which a recipe process runs
def test_the_main_job_prints_the_readme_figures_of_this_cpu(compare_default_run):
    script = _script()
    record = script.read_figures().get(script.machine_key())
    if record is None or "compare" not in record["figures"]:
        pytest.skip(
            f"docs/figures.json has no figures for {script.machine_key()}: the "
            "README's figures come from another CPU or other versions"
        )
    result, log_dir, _ = compare_default_run
    recorded = record["figures"]["compare"]["networks"]
    measured = {}
    for line in result.stdout.splitlines():
        fields = line.split()
        if fields and fields[0] in ("without_bn", "with_bn"):
            measured[fields[0]] = {
                "final_validation_accuracy": float(fields[1]),
                "test_accuracy": float(fields[2]),
            }
    assert measured == recorded, json.dumps(
        {"README (docs/figures.json)": recorded, "this run": measured}, indent=1
    )
