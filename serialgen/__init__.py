"""SerialGen pipeline."""
