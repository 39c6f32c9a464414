"""Device resolution of the hot paths (CUDA where there is one), tested on the CPU."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from medfuse import perf


def test_auto_is_the_cpu_here_and_cpu_is_always_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert perf.resolve_device("auto").type == "cpu"
    assert perf.resolve_device("cpu").type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert perf.resolve_device("auto").type == "cuda"
    assert perf.resolve_device("cpu").type == "cpu"
    monkeypatch.setenv("MEDFUSE_DEVICE", "cpu")
    assert perf.resolve_device("auto").type == "cpu"


def test_asking_for_a_gpu_without_one_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"train.accelerator='gpu'.*accelerator=auto"):
        perf.resolve_device("gpu")


def test_workers_follow_the_cpu_count_and_the_device() -> None:
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert perf.default_workers(cpu, cpus=2) == 0  # this machine: as before
    assert perf.default_workers(cpu, cpus=16) == 4
    assert perf.default_workers(gpu, cpus=16) == 8 and perf.default_workers(gpu, cpus=1) == 0
    assert perf.loader_options(cpu, None)["pin_memory"] is False
    opts = perf.loader_options(gpu, 3)
    assert opts == {"num_workers": 3, "persistent_workers": True, "pin_memory": True}
    assert perf.loader_options(cpu, 0)["persistent_workers"] is False


def test_mixed_precision_per_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert perf.resolve_precision("auto", "gpu") == "16-mixed"  # pre-Ampere: fp16 + scaling
    assert perf.half_dtype(torch.device("cuda")) == torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert perf.resolve_precision("auto", "gpu") == "bf16-mixed"
    assert perf.resolve_precision("32", "gpu") == "32-true"
    monkeypatch.setattr(perf, "native_bf16", lambda: False)
    with perf.autocast(torch.device("cpu"), True):  # emulated bf16 is slower: stays fp32
        assert not torch.is_autocast_enabled("cpu")


def test_onnxruntime_providers_fall_back_to_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    ort = pytest.importorskip("onnxruntime")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert perf.onnx_providers() == ["CPUExecutionProvider"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert perf.onnx_providers()[0] == "CUDAExecutionProvider"


def test_to_device_leaves_cpu_batches_alone() -> None:
    batch = {"image": torch.zeros(2, 3, 4, 4), "tab": torch.ones(2)}
    assert perf.to_device(batch, torch.device("cpu")) is batch


def _tiny(tiny_dir: Any, tiny_spec: Any) -> Any:
    from medfuse.data import load_table

    return load_table(tiny_dir / "data.csv", tiny_spec)[0]


def test_training_on_a_gpu_that_is_not_there_is_a_config_error(
        tiny_dir: Any, tiny_spec: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from medfuse import FusionClassifier
    from medfuse.errors import ConfigError

    tiny_df = _tiny(tiny_dir, tiny_spec)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    clf = FusionClassifier(tiny_spec, image_backbone="small_cnn", pretrained="none", image_size=32,
                           max_epochs=1,
                           accelerator="gpu", progress=False)
    with pytest.raises(ConfigError, match=r"accelerator='gpu'.*no CUDA device"):
        clf.fit(tiny_df.iloc[:18], tiny_df.iloc[18:], run_dir=tmp_path)


def test_a_fitted_model_predicts_on_the_resolved_device(
        tiny_dir: Any, tiny_spec: Any, tmp_path: Any) -> None:
    from medfuse import FusionClassifier

    tiny_df = _tiny(tiny_dir, tiny_spec)
    clf = FusionClassifier(tiny_spec, image_backbone="small_cnn", pretrained="none", image_size=32,
                           max_epochs=1,
                           progress=False).fit(tiny_df.iloc[:18], tiny_df.iloc[18:],
                                               run_dir=tmp_path)
    assert clf._device() == perf.resolve_device("auto")
    proba = clf.predict_proba(tiny_df.iloc[:4])
    assert proba.shape == (4, 2) and abs(float(proba.sum()) - 4.0) < 1e-5
