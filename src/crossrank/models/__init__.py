"""Finding a model's files and checking they describe a cross-encoder crossrank can run."""
