from __future__ import annotations

import pytest

from crossrank import BatchingOptions, ConfigError, ModelSpec, RuntimeOptions, TruncationOptions
from crossrank.errors import CrossrankError, ModelNotFoundError


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:12"])
def test_valid_devices(device: str) -> None:
    assert RuntimeOptions(device=device).device == device


@pytest.mark.parametrize("device", ["gpu", "cuda:", "cuda:x", "CPU", ""])
def test_invalid_device_names_the_choices(device: str) -> None:
    with pytest.raises(ConfigError, match="auto, cpu, cuda, cuda:N"):
        RuntimeOptions(device=device)


def test_invalid_dtype_and_threads() -> None:
    with pytest.raises(ConfigError, match="dtype 'half'"):
        RuntimeOptions(dtype="half")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="num_threads"):
        RuntimeOptions(num_threads=0)


def test_batching_limits() -> None:
    with pytest.raises(ConfigError, match="max_batch_tokens"):
        BatchingOptions(max_batch_tokens=0)
    with pytest.raises(ConfigError, match="max_batch_size"):
        BatchingOptions(max_batch_size=0)


def test_truncation_defaults_follow_flagembedding() -> None:
    assert TruncationOptions().max_length == 512
    assert TruncationOptions().query_cap == 384
    assert TruncationOptions(max_length=1024).query_cap == 768
    assert TruncationOptions(max_length=100, query_max_length=10).query_cap == 10


@pytest.mark.parametrize(("max_length", "query_max_length"), [(4, None), (100, 100), (100, 0)])
def test_truncation_limits(max_length: int, query_max_length: int | None) -> None:
    with pytest.raises(ConfigError):
        TruncationOptions(max_length=max_length, query_max_length=query_max_length)


def test_empty_model_name() -> None:
    with pytest.raises(ConfigError, match="empty"):
        ModelSpec(name_or_path="  ")


def test_error_text_carries_the_fix() -> None:
    error = ModelNotFoundError("no model", fix="download it")
    assert str(error) == "no model\nFix: download it"
    assert isinstance(error, CrossrankError)
    assert str(CrossrankError("plain")) == "plain"
