"""The HTTP server: Cohere-, Jina-, TEI- and vLLM-compatible rerank routes over one micro-batched model."""

from crossrank.server.app import create_app as create_app
from crossrank.server.options import ServerOptions as ServerOptions

__all__ = ["ServerOptions", "create_app"]
