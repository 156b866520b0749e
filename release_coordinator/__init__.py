"""The distribution's command-line entry points (see :mod:`release_coordinator.launch`)."""
