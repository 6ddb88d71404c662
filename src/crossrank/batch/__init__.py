"""Offline batch reranking: a file of (query, documents) rows to a file of scores, locally or on Ray.

>>> from crossrank.batch import run, RayOptions
>>> run("candidates.jsonl", "scores.jsonl", model="BAAI/bge-reranker-v2-m3")            # this machine
>>> run("candidates.parquet", "scores.parquet", model="BAAI/bge-reranker-v2-m3",
...     engine="ray", ray=RayOptions(address="auto", actors=8, num_gpus=1))            # a Ray cluster

Parquet needs the ``batch`` extra (pyarrow), the Ray engine the ``ray`` extra (``ray[data]``).
"""

from crossrank.batch.rows import output_row as output_row
from crossrank.batch.runner import BatchReport as BatchReport
from crossrank.batch.runner import Engine as Engine
from crossrank.batch.runner import ProgressCallback as ProgressCallback
from crossrank.batch.runner import RayOptions as RayOptions
from crossrank.batch.runner import run as run

__all__ = ["BatchReport", "Engine", "ProgressCallback", "RayOptions", "output_row", "run"]
