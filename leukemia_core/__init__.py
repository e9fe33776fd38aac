"""Core library of the ALL blast-screening app: pure functions on arrays and dataclasses.

Research use only: decision support, never a diagnosis. The library never imports Streamlit.
"""

__version__ = "0.1.0"
