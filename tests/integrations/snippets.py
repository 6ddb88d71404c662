"""The Python examples of a documentation page, run as written (with this machine's model and server put in)."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import REPO

_BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)
# What the pages name, and what the tests run instead.
PAGE_MODEL = "BAAI/bge-reranker-v2-m3"
PAGE_URL = "http://127.0.0.1:8000"


def python_blocks(page: str, *, model: Path, url: str) -> list[str]:
    """The ```python blocks of ``docs/<page>``, in order, with the page's model and server address replaced."""
    text = (REPO / "docs" / page).read_text()
    return [block.replace(PAGE_MODEL, str(model)).replace(PAGE_URL, url) for block in _BLOCK.findall(text)]
