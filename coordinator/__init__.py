"""The Release Coordinator service."""
