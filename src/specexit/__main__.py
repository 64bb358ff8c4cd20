"""python -m specexit: the same as the specexit command."""

from .cli import main

raise SystemExit(main())
