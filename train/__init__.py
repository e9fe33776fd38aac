"""Training side of the project: dataset loading, subject-level splits, training, evaluation."""
