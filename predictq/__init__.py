"""predictq: a table of historical data in, a prediction service out."""

__version__ = "0.1.0"
