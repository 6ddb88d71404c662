"""Evaluation: how much a reranker improves a first stage, on BEIR and C-MTEB style data.

>>> from crossrank.evaluate import evaluate
>>> report = evaluate("../shared/data/en_beir_dbpedia_subset", "path/to/cross-encoder")
>>> report.datasets[0].metrics["ndcg@10"], report.datasets[0].reranked["ndcg@10"]

Needs the ``eval`` extra (``pip install 'crossrank[eval]'``: bm25s, ir-measures, scipy; matplotlib for the
HTML report and plots of :mod:`crossrank.evaluate.report`).
"""

from crossrank.evaluate.bm25 import Bm25Index as Bm25Index
from crossrank.evaluate.bm25 import tokenize as tokenize
from crossrank.evaluate.compare import CompareReport as CompareReport
from crossrank.evaluate.compare import CompareRow as CompareRow
from crossrank.evaluate.compare import compare as compare
from crossrank.evaluate.compare import load_results as load_results
from crossrank.evaluate.data import Dataset as Dataset
from crossrank.evaluate.data import find_datasets as find_datasets
from crossrank.evaluate.data import load_beir as load_beir
from crossrank.evaluate.data import load_cmteb as load_cmteb
from crossrank.evaluate.data import load_trec_run as load_trec_run
from crossrank.evaluate.metrics import METRICS as METRICS
from crossrank.evaluate.runner import DatasetReport as DatasetReport
from crossrank.evaluate.runner import EvalReport as EvalReport
from crossrank.evaluate.runner import FirstStage as FirstStage
from crossrank.evaluate.runner import ProgressCallback as ProgressCallback
from crossrank.evaluate.runner import evaluate as evaluate
from crossrank.evaluate.runner import run_first_stage as run_first_stage
from crossrank.evaluate.runner import write_trec_run as write_trec_run

__all__ = [
    "METRICS",
    "Bm25Index",
    "CompareReport",
    "CompareRow",
    "Dataset",
    "DatasetReport",
    "EvalReport",
    "FirstStage",
    "ProgressCallback",
    "compare",
    "evaluate",
    "find_datasets",
    "load_beir",
    "load_cmteb",
    "load_results",
    "load_trec_run",
    "run_first_stage",
    "tokenize",
    "write_trec_run",
]
