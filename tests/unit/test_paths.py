"""Where crossrank keeps its own caches."""

from __future__ import annotations

from pathlib import Path

import pytest

from crossrank.paths import cache_folder


def test_the_cache_folder_follows_an_absolute_xdg_cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert cache_folder("onnx") == tmp_path / "home" / ".cache" / "crossrank" / "onnx"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_folder("onnx") == tmp_path / "xdg" / "crossrank" / "onnx"
    for ignored in ("relative/cache", ""):  # the XDG spec: a relative path is invalid, and is ignored
        monkeypatch.setenv("XDG_CACHE_HOME", ignored)
        assert cache_folder("onnx") == tmp_path / "home" / ".cache" / "crossrank" / "onnx"
