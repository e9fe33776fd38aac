"""Streamlit widgets and cached loaders shared by the pages; the core never imports them."""
