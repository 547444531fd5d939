"""The data layer: reading (``formats/``), preprocessing, datasets and split protocols."""

from evorec.data.formats import detect_format, read_events, read_item_text

__all__ = ["detect_format", "read_events", "read_item_text"]
