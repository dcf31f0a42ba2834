"""The web UI: a Streamlit app that talks to the HTTP API only (``hybridrec ui``).

`APP` is the script ``streamlit run`` runs; `hybridrec.ui.client` is its HTTP client. Neither
imports model or bundle code: what the UI shows is what the API answers.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["APP"]

#: The Streamlit script.
APP = Path(__file__).with_name("app.py")
