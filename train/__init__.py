"""Training side of the project: dataset loading, subject-level splits, training, evaluation."""

from leukemia_core.runtime import configure_runtime

# Before anything imports TensorFlow: CPU only where there is no GPU, quiet TensorFlow logging.
configure_runtime()
