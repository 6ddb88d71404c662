"""crossrank: cross-encoder reranking that works out of the box.

>>> from crossrank import Reranker
>>> Reranker("BAAI/bge-reranker-v2-m3").rerank("苹果手机", ["苹果是一种水果", "iPhone 15 正式发布"])
"""

from crossrank._version import __version__ as __version__
from crossrank.async_reranker import AsyncReranker as AsyncReranker
from crossrank.backends.base import Backend as Backend
from crossrank.backends.base import EncodedBatch as EncodedBatch
from crossrank.config import BatchingOptions as BatchingOptions
from crossrank.config import CacheOptions as CacheOptions
from crossrank.config import ChunkingOptions as ChunkingOptions
from crossrank.config import ModelSpec as ModelSpec
from crossrank.config import PromptOptions as PromptOptions
from crossrank.config import RerankerOptions as RerankerOptions
from crossrank.config import RerankOptions as RerankOptions
from crossrank.config import RuntimeOptions as RuntimeOptions
from crossrank.config import TruncationOptions as TruncationOptions
from crossrank.engine.batcher import QueueOptions as QueueOptions
from crossrank.errors import BackendError as BackendError
from crossrank.errors import BackendUnavailableError as BackendUnavailableError
from crossrank.errors import ConfigError as ConfigError
from crossrank.errors import CrossrankError as CrossrankError
from crossrank.errors import InferenceError as InferenceError
from crossrank.errors import InputError as InputError
from crossrank.errors import InputTooLongError as InputTooLongError
from crossrank.errors import IntegrityError as IntegrityError
from crossrank.errors import LimitExceededError as LimitExceededError
from crossrank.errors import ModelError as ModelError
from crossrank.errors import ModelNotFoundError as ModelNotFoundError
from crossrank.errors import OverloadedError as OverloadedError
from crossrank.errors import TruncationWarning as TruncationWarning
from crossrank.errors import UnsupportedModelError as UnsupportedModelError
from crossrank.fingerprint import Fingerprint as Fingerprint
from crossrank.reranker import Reranker as Reranker
from crossrank.types import RerankResult as RerankResult
from crossrank.types import ScoredDocument as ScoredDocument
from crossrank.types import Span as Span
from crossrank.types import Timing as Timing
from crossrank.types import Usage as Usage

__all__ = [
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
    "Span",
    "Timing",
    "TruncationOptions",
    "TruncationWarning",
    "UnsupportedModelError",
    "Usage",
    "__version__",
]
