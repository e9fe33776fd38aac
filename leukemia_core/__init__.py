"""Core library of the ALL blast-screening app: pure functions on arrays and dataclasses.

Research use only: decision support, never a diagnosis. The library never imports Streamlit.
"""

from leukemia_core.runtime import configure_runtime

# Before anything imports TensorFlow: CPU only where there is no GPU, quiet TensorFlow logging.
configure_runtime()

__version__ = "0.1.0"
