"""Reading, encoding and storing data."""
