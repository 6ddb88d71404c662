"""`crossrank download` against a fake hub on 127.0.0.1 serving the real English model the way the hub does."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.fake_hub import FakeHub, FakeRepo, serve

from crossrank.errors import IntegrityError, ModelNotFoundError
from crossrank.models.download import download_model
from crossrank.models.integrity import MANIFEST_NAME
from crossrank.models.verify import verify_model

# Children import this checkout's crossrank, whatever checkout is installed.
CHILD_PYTHONPATH = os.pathsep.join([str(Path(__file__).resolve().parents[2] / "src"), os.environ.get("PYTHONPATH", "")])
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def fake_hub(english_model_dir: Path) -> Iterator[tuple[FakeHub, str]]:
    hub = FakeHub(repos={"org/minilm": FakeRepo.from_folder(english_model_dir, commit=COMMIT)})
    server = serve(hub)
    yield hub, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_fake_hub_interrupted_transfer_resumes_and_writes_the_manifest(
    fake_hub: tuple[FakeHub, str], tmp_path: Path, english_model_dir: Path
) -> None:
    hub, endpoint = fake_hub
    hub.cut_first_get["model.safetensors"] = 30_000_000  # the connection drops a third of the way in
    result = download_model("org/minilm", local_dir=tmp_path / "m", endpoint=endpoint)
    gets = [(path, rng) for method, path, rng in hub.requests if method == "GET" and path.endswith("model.safetensors")]
    assert len(gets) == 2
    assert gets[0][1] is None
    assert gets[1][1] is not None
    resumed_at = int(gets[1][1].removeprefix("bytes=").removesuffix("-"))
    assert 0 < resumed_at <= 30_000_000  # continued from what had arrived, not from zero
    real = _sha256(english_model_dir / "model.safetensors")
    assert _sha256(result.folder / "model.safetensors") == real
    assert result.commit == COMMIT
    manifest = json.loads((result.folder / MANIFEST_NAME).read_text())
    assert manifest["repo_id"] == "org/minilm"
    assert manifest["commit"] == COMMIT
    assert manifest["files"]["model.safetensors"] == {"size": 90_866_412, "sha256": real}
    assert set(manifest["files"]) == {p.name for p in english_model_dir.iterdir()} - {"README.md"}
    assert verify_model(result.folder).status == "ok"


def test_fake_hub_second_download_fetches_nothing_again(fake_hub: tuple[FakeHub, str], tmp_path: Path) -> None:
    hub, endpoint = fake_hub
    first = download_model("org/minilm", cache_dir=str(tmp_path / "cache"), endpoint=endpoint)
    assert first.folder == tmp_path / "cache" / "models--org--minilm" / "snapshots" / COMMIT
    hub.requests.clear()
    second = download_model("org/minilm", cache_dir=str(tmp_path / "cache"), endpoint=endpoint)
    assert second.folder == first.folder
    assert not [r for r in hub.requests if r[0] == "GET" and "/resolve/" in r[1]]


def test_fake_hub_bytes_corrupted_in_transit_are_refused(
    fake_hub: tuple[FakeHub, str], tmp_path: Path, english_model_dir: Path
) -> None:
    hub, endpoint = fake_hub
    repo = hub.repos["org/minilm"]
    good = repo.files["model.safetensors"]
    bad = bytearray(good)
    bad[60_000_000] ^= 0x01
    repo.files["model.safetensors"] = bytes(bad)
    repo.tree_bytes["model.safetensors"] = good  # the hub's listing keeps the true sha256
    with pytest.raises(IntegrityError, match=r"differs from what the hub lists: model\.safetensors") as caught:
        download_model("org/minilm", local_dir=tmp_path / "m", endpoint=endpoint)
    assert caught.value.fix is not None
    assert "crossrank download org/minilm" in caught.value.fix
    assert not (tmp_path / "m" / MANIFEST_NAME).exists()


def test_fake_hub_unknown_model_and_revision(fake_hub: tuple[FakeHub, str], tmp_path: Path) -> None:
    _, endpoint = fake_hub
    with pytest.raises(ModelNotFoundError, match="neither a local folder nor a model on the hub"):
        download_model("org/nothing", local_dir=tmp_path / "x", endpoint=endpoint)
    with pytest.raises(ModelNotFoundError, match="has no revision 'v9'"):
        download_model("org/minilm", revision="v9", local_dir=tmp_path / "x", endpoint=endpoint)


@pytest.mark.slow
def test_fake_hub_cli_download_then_verify(fake_hub: tuple[FakeHub, str], tmp_path: Path) -> None:
    _, endpoint = fake_hub
    env = {
        **os.environ,
        "HF_ENDPOINT": endpoint,
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "PYTHONPATH": CHILD_PYTHONPATH,
    }
    target = tmp_path / "minilm"
    done = subprocess.run(
        [sys.executable, "-m", "crossrank", "download", "org/minilm", "--dir", str(target)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "downloaded org/minilm at 0123456789ab: 6 files" in done.stdout
    assert (target / MANIFEST_NAME).is_file()
    checked = subprocess.run(
        [sys.executable, "-m", "crossrank", "verify", str(target), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    report = json.loads(checked.stdout)
    assert report["status"] == "ok"
    assert [c["status"] for c in report["checks"]] == ["ok", "ok", "ok", "ok"]


def test_fake_hub_cache_snapshot_without_manifest_is_checked_against_the_hub_sizes(
    fake_hub: tuple[FakeHub, str], tmp_path: Path
) -> None:
    _, endpoint = fake_hub
    folder = download_model("org/minilm", cache_dir=str(tmp_path / "cache"), endpoint=endpoint).folder
    (folder / MANIFEST_NAME).unlink()
    checksums = next(c for c in verify_model(folder).checks if c.name == "checksums")
    assert checksums.status == "ok"
    assert "sizes in the hub's listing of org/minilm" in checksums.detail
    vocab = folder / "vocab.txt"
    text = vocab.read_text()
    vocab.unlink()  # a link into the cache's blobs: replace it, do not write through it
    vocab.write_text(text + "extra\n")
    checksums = next(c for c in verify_model(folder).checks if c.name == "checksums")
    assert checksums.status == "fail"
    assert "vocab.txt has 231,514 bytes, expected 231,508" in checksums.detail
