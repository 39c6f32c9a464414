"""The package's shape: layers without cycles, small modules, templates, old import paths.

The layers themselves are import-linter contracts in ``pyproject.toml`` (run by ``make lint``);
these tests add what a contract cannot say.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path

import grimp
import pytest

import medfuse

PACKAGE = Path(medfuse.__file__).parent
MAX_LINES = 450


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def imported(module: str) -> Iterator[str]:
        return iter(sorted(graph.find_modules_directly_imported_by(module)))

    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, imported(root))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, imported(child)))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycles_even_inside_functions() -> None:
    # grimp records every import statement, at module level or inside a function
    graph = grimp.build_graph("medfuse")
    assert _cycles(graph) == []


def test_cycle_finder_finds_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for name in ("p", "p.a", "p.b", "p.c"):
        graph.add_module(name)
    graph.add_import(importer="p.a", imported="p.b")
    graph.add_import(importer="p.b", imported="p.a")
    graph.add_import(importer="p.c", imported="p.a")
    assert _cycles(graph) == [["p.a", "p.b"]]


def test_no_module_over_450_lines() -> None:
    sizes = {str(p.relative_to(PACKAGE)): len(p.read_text().splitlines())
             for p in PACKAGE.rglob("*.py")}
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}
    # most modules are much smaller
    assert sum(n <= 300 for n in sizes.values()) > 0.75 * len(sizes)


@pytest.mark.parametrize("folder", ["evaluation", "serve", "explain"])
def test_html_comes_from_shipped_templates(folder: str) -> None:
    templates = list((PACKAGE / folder / "templates").glob("*.html.j2"))
    assert templates, f"medfuse/{folder}/templates/ holds no template"
    for path in (PACKAGE / folder).rglob("*.py"):
        text = path.read_text()
        assert "<html" not in text.lower(), f"{path} still writes an HTML page"


@pytest.mark.parametrize(("old", "names"), [
    ("medfuse.hybrid", ["HybridClassifier", "file_digest", "extract_image_features",
                        "make_head", "FeatureCache", "module_digest", "bf16_supported"]),
    ("medfuse.decision", ["DecisionMixin"]),
    ("medfuse.extraction", ["encode_images", "OnnxEncoder", "static_same_padding", "network"]),
    ("medfuse.estimators", ["FusionClassifier", "HybridClassifier", "MODEL_FILE",
                            "ESTIMATOR_FILE", "keep_missing", "prediction_spec"]),
    ("medfuse.evaluation.metrics", ["classification_metrics", "summarize_folds", "METRIC_KEYS"]),
    ("medfuse.evaluation.stats", ["bootstrap_ci", "delong_test", "paired_bootstrap",
                                  "subgroup_metrics", "TemperatureScaler", "choose_threshold"]),
    ("medfuse.runs", ["load_model", "train_run", "cv_run", "ablate_run", "evaluate_run",
                      "predict_run", "evaluate", "estimator_from_config"]),
    ("medfuse.config", ["DataSpec", "RunConfig", "load_config", "CONFIG_DIR"]),
    ("medfuse.cli", ["main", "app"]),
    ("medfuse.serve", ["serve", "create_app"]),
    ("medfuse.serve.app", ["create_app"]),
    ("medfuse.evaluation.report", ["build_report"]),
    ("medfuse.explain", ["explain"]),
])
def test_old_import_paths_still_work(old: str, names: list[str]) -> None:
    module = importlib.import_module(old)
    missing = [n for n in names if not hasattr(module, n)]
    assert missing == []


def test_moved_classes_are_the_same_objects() -> None:
    from medfuse.decision import DecisionMixin as OldMixin
    from medfuse.estimators.base import DecisionMixin
    from medfuse.estimators.hybrid import HybridClassifier
    from medfuse.hybrid import HybridClassifier as OldHybrid

    assert OldMixin is DecisionMixin and OldHybrid is HybridClassifier
    assert medfuse.HybridClassifier is HybridClassifier
