"""``python -m hybridrec.serving serve ...`` / ``events export ...``."""

from hybridrec.serving.cli import main

main()
