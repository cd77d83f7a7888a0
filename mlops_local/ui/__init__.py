"""Streamlit UI: `app.py` is the entry, one script per page in `pages/`; no logic lives here."""
