"""``rc``'s command groups, one module each: ``release``, ``note``, ``study`` and ``service``.

Each module defines its Typer group (``app``); :mod:`rc_cli.main` mounts them under the root.
"""
