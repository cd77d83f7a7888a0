"""Streamlit UI: `app.py` is the entry, one script per page in `views/`; no logic lives here.

Not `pages/`: a folder of that name next to the entry script makes Streamlit run the first session of
a new server process through its file-based navigation (pages listed by file name, no sidebar of ours).
"""
