from __future__ import annotations

import subprocess
import sys

import crossrank
from conftest import subprocess_env


def test_public_names() -> None:
    assert sorted(crossrank.__all__) == sorted(
        [
            "AsyncReranker",
            "Backend",
            "BackendError",
            "BackendUnavailableError",
            "BatchingOptions",
            "CacheOptions",
            "ChunkingOptions",
            "ConfigError",
            "CrossrankError",
            "EncodedBatch",
            "Fingerprint",
            "InferenceError",
            "InputError",
            "InputTooLongError",
            "IntegrityError",
            "LimitExceededError",
            "ModelError",
            "ModelNotFoundError",
            "ModelSpec",
            "OverloadedError",
            "PromptOptions",
            "QueueOptions",
            "RerankOptions",
            "RerankResult",
            "Reranker",
            "RerankerOptions",
            "RuntimeOptions",
            "ScoredDocument",
            "Timing",
            "Span",
            "TruncationOptions",
            "TruncationWarning",
            "UnsupportedModelError",
            "Usage",
            "__version__",
        ]
    )
    for name in crossrank.__all__:
        assert hasattr(crossrank, name)


def test_import_stays_light() -> None:
    code = (
        "import sys, crossrank\n"
        "heavy = [m for m in ('torch', 'transformers', 'fastapi', 'typer', 'rich', 'huggingface_hub')"
        " if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=subprocess_env())
    assert out.stdout.strip() == ""
