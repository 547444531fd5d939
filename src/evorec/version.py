"""The evorec version: reported by the CLI and the service, written into every manifest."""

__version__ = "0.1.0"
