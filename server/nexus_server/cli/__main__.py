"""`python -m nexus_server.cli`: the `nexus` command without its installed script."""

from nexus_server.cli import main

raise SystemExit(main())
