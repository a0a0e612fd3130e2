"""The `studio` command line: a thin client of Studio's REST API (the shape of `az ml`).

Nothing here imports Django: the CLI talks to a server over HTTP only.
"""
