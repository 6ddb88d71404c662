"""``python -m crossrank`` runs the CLI."""

from crossrank.cli import main

main()
