"""Safe artefacts: nothing from a run directory is unpickled, altered files are refused."""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import pytest

from medfuse.io import RunDirError

SRC = Path(__file__).resolve().parents[1] / "src" / "medfuse"
PICKLERS = {"pickle", "cPickle", "_pickle", "joblib", "dill", "cloudpickle", "shelve", "marshal"}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "?"


def _kw(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_true(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def unsafe_loads(source: str, filename: str = "<src>") -> list[str]:
    """Calls that can run code from a file: pickle-family loads, ``torch.load`` without
    ``weights_only=True``, ``np.load(allow_pickle=True)``, ``pd.read_pickle``, unsafe YAML,
    skops ``load(trusted=True)``."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""]
            found += [f"{filename}:{node.lineno}: import {n}" for n in names
                      if n.split(".")[0] in PICKLERS]
            continue
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        parts = name.split(".")
        bad = (
            (parts[0] in PICKLERS and parts[-1].startswith("load"))
            or (name == "torch.load" and not _is_true(_kw(node, "weights_only")))
            or (parts[-1] == "load" and parts[0] in {"np", "numpy"}
                and _is_true(_kw(node, "allow_pickle")))
            or parts[-1] == "read_pickle"
            or name in {"yaml.load", "yaml.unsafe_load", "yaml.full_load"}
            or (parts[-1] == "load" and parts[0] in {"sio", "skops"}
                and _is_true(_kw(node, "trusted")))
        )
        if bad:
            found.append(f"{filename}:{node.lineno}: {ast.unparse(node)[:100]}")
    return found


def test_the_checker_finds_unsafe_loads() -> None:
    code = """
import pickle
import joblib
pickle.load(fh)
joblib.load(p)
torch.load(p)
torch.load(p, weights_only=False)
np.load(p, allow_pickle=True)
pd.read_pickle(p)
yaml.load(s, Loader=yaml.Loader)
sio.load(p, trusted=True)
torch.load(p, map_location="cpu", weights_only=True)
np.load(p, allow_pickle=False)
yaml.safe_load(s)
"""
    assert len(unsafe_loads(code)) == 10


def test_no_unsafe_loading_anywhere_in_medfuse() -> None:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        found += unsafe_loads(path.read_text(), str(path.relative_to(SRC)))
    assert not found, "unsafe deserialisation:\n" + "\n".join(found)


def test_no_pickle_text_in_source() -> None:
    """The plain-text version of the check, for calls the AST check could miss."""
    hits = []
    for path in sorted(SRC.rglob("*.py")):
        for i, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if any(s in code for s in ("pickle.load", "joblib.load", "allow_pickle=True",
                                       "weights_only=False")):
                hits.append(f"{path.relative_to(SRC)}:{i}: {line.strip()}")
    assert not hits, "\n".join(hits)


# ---------------------------------------------------------------- hybrid skops files
@pytest.fixture(scope="module")
def hybrid_run(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from medfuse.config import DataSpec
    from medfuse.data import load_table
    from medfuse.hybrid import HybridClassifier

    spec = DataSpec(tabular={"age": "continuous"}, text="note", target="label",
                    group="patient")
    df, _ = load_table(tiny_dir / "data.csv", spec)
    out = tmp_path_factory.mktemp("hybrid") / "run"
    return HybridClassifier(spec, head="lr", min_token_freq=1, progress=False).fit(df).save(out)


def _tampered(run: Path, tmp_path: Path, name: str, obj: object) -> Path:
    """A copy of ``run`` whose ``name`` holds ``obj``, with a matching manifest (an
    attacker can rewrite manifest.json too: the type check must stand on its own)."""
    import skops.io as sio

    from medfuse.io import write_manifest

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    sio.dump(obj, copy / name)
    write_manifest(copy, [p.name for p in copy.iterdir() if p.name != "manifest.json"])
    return copy


@pytest.mark.parametrize("func", ["eval", "numpy.load", "os.system"])
def test_skops_files_holding_functions_are_refused(
    hybrid_run: Path, tmp_path: Path, func: str
) -> None:
    """A function inside a pipeline would be called on the request's inputs."""
    import importlib
    import os  # noqa: F401  (os.system is resolved below)

    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    from medfuse.hybrid import HybridClassifier

    module, _, attr = func.rpartition(".")
    fn = getattr(importlib.import_module(module or "builtins"), attr)
    run = _tampered(hybrid_run, tmp_path, "head.skops",
                    make_pipeline(FunctionTransformer(func=fn)))
    with pytest.raises(RunDirError, match=r"head\.skops: refusing to load types") as err:
        HybridClassifier.load(run)
    assert attr in str(err.value)


def test_untampered_hybrid_run_loads(hybrid_run: Path) -> None:
    from medfuse.hybrid import HybridClassifier

    assert HybridClassifier.load(hybrid_run).classes_ == ["benign", "malignant"]


# ------------------------------------------------------------------ altered files
def test_an_altered_json_file_is_refused_by_name(hybrid_run: Path, tmp_path: Path) -> None:
    """(Altered weights and preprocess.json: see test_estimator / test_hybrid.)"""
    from medfuse.runs import load_model

    copy = tmp_path / "run"
    shutil.copytree(hybrid_run, copy)
    meta = json.loads((copy / "estimator.json").read_text())
    meta["params"]["head"] = "xgboost"
    (copy / "estimator.json").write_text(json.dumps(meta))
    with pytest.raises(RunDirError, match=r"\['estimator\.json'\].*do not match their sha256"):
        load_model(copy)


def test_an_unlisted_onnx_file_is_not_served(tiny_dir: Path, tmp_path: Path) -> None:
    """``serve`` would run ``model.onnx`` if present: it must be one the manifest vouches for."""
    pytest.importorskip("onnxruntime")
    from medfuse.config import DataSpec
    from medfuse.data import load_table
    from medfuse.estimators import FusionClassifier
    from medfuse.export import export_onnx
    from medfuse.serve.app import create_app

    spec = DataSpec(tabular={"age": "continuous"}, target="label", group="patient")
    df, _ = load_table(tiny_dir / "data.csv", spec)
    run = FusionClassifier(spec, max_epochs=1, hidden_dims=(4,), progress=False).fit(df)\
        .save(tmp_path / "run")
    export_onnx(run)  # lists model.onnx in the manifest
    assert "model.onnx" in json.loads((run / "manifest.json").read_text())["files"]
    assert create_app(run, audit_db=tmp_path / "a.sqlite").state.model.backend == "onnxruntime"
    manifest = json.loads((run / "manifest.json").read_text())
    del manifest["files"]["model.onnx"]  # e.g. dropped in by someone else
    (run / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RunDirError, match=r"model\.onnx' is not in manifest\.json"):
        create_app(run, audit_db=tmp_path / "b.sqlite")
    blob = bytearray((run / "model.onnx").read_bytes())  # listed but altered
    blob[len(blob) // 2] ^= 0xFF
    export_onnx(run)
    (run / "model.onnx").write_bytes(bytes(blob))
    with pytest.raises(RunDirError, match=r"\['model\.onnx'\].*do not match"):
        create_app(run, audit_db=tmp_path / "c.sqlite")
